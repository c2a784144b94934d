// Package hostile is the hostile-input regression suite: every attack that
// an outside security test tried against iotransit (floods of refused
// connections and failed authentications, forged certificates, scope
// escalation through integrations, costly reads, hostile payloads, protocol
// tricks, shutdown under connection churn) is replayed here against a real
// node, so that later changes to the audit, ingest or API cannot reopen
// them. Flood budgets are asserted by what was written (audit entries, log
// lines), never by time. docs/SECURITY.md lists the attacks, kept in step
// with these tests. The package holds only tests.
package hostile
