package gwproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// FirmwareCustom is the custom metadata of every firmware target of a
// tenant's TUF repository ("custom" of the target in targets.json, signed
// with the targets key): the version and the model of the image.
type FirmwareCustom struct {
	Version string `json:"version"`
	Model   string `json:"model"`
}

// ParseFirmwareCustom decodes and checks a firmware target's custom
// metadata (raw is nil when the target has none).
func ParseFirmwareCustom(raw []byte) (FirmwareCustom, error) {
	var c FirmwareCustom
	if raw == nil {
		return c, errors.New(`custom {"version","model"} is missing`)
	}
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&c); err != nil {
		return c, errors.New(`custom is not {"version","model"}`)
	}
	if !ValidModel(c.Model) {
		return c, errors.New("custom.model is not a model name")
	}
	if !ValidVersion(c.Version) {
		return c, errors.New("custom.version is not a version such as 1.2.3")
	}
	return c, nil
}

// FirmwareTarget is the TUF target path of a model's firmware version:
// model, "-", version (for example "TSGW06-1.2.0"). Both must be valid
// (ValidModel, ValidVersion), so the path is one URL segment and names one
// (model, version) pair.
func FirmwareTarget(model, version string) string { return model + "-" + version }

// ValidModel reports whether s is a gateway model name: 1 to 32 ASCII
// letters, digits or underscores (no '-': it separates the version in a
// target path).
func ValidModel(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ValidVersion reports whether s is a firmware version: one to four
// dot-separated decimal numbers of at most nine digits, without leading
// zeros ("1", "1.2", "2.10.3"; not "1.02", "v1", "1.2-rc1").
func ValidVersion(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 9 || len(p) > 1 && p[0] == '0' {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// CompareVersions compares two valid versions (ValidVersion) number by
// number, a missing number counting as 0: it returns -1 when a is older
// than b, 0 when they are the same version ("1.2" and "1.2.0" are), +1
// when a is newer. Anti-rollback accepts only a version that compares
// greater than the installed one.
func CompareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		x, y := versionPart(pa, i), versionPart(pb, i)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
	}
	return 0
}

// versionPart returns the i-th number of a split version, 0 past its end.
func versionPart(parts []string, i int) uint64 {
	if i >= len(parts) {
		return 0
	}
	n, _ := strconv.ParseUint(parts[i], 10, 64)
	return n
}
