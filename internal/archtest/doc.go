// Package archtest holds tests of the repository's shape: every package has
// a doc comment, and packages keep to their boundaries (DESIGN §2).
package archtest
