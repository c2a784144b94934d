package main

import (
	"runtime/debug"
)

// version is the version iotransit reports (--version, "version"); a
// release sets it with -ldflags "-X main.version=v1.2.3". When it is not
// set, the build's own information gives it (versionString).
var version = ""

// versionString is the version: the one set at link time, else the main
// module's version (go install ...@v1.2.3), else the VCS revision the
// binary was built from (with "-dirty" for uncommitted changes), else "dev".
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "dev+" + rev + dirty
}

// wantsVersion reports whether args ask for the version.
func wantsVersion(args []string) bool {
	return len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version")
}
