// The rules for ids, serials, labels and deployment groups, each with the
// fault that states it.

package registry

import (
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Faults for malformed input a client can see; each message states the rule
// its check enforces.
var (
	ErrTenantInvalid = fault.Define("registry.tenant_invalid", fault.InvalidArgument, "a tenant id is 2 to 32 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
	ErrSerialInvalid = fault.Define("registry.serial_invalid", fault.InvalidArgument, "a gateway serial is 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	ErrStateInvalid  = fault.Define("registry.state_invalid", fault.InvalidArgument, "a gateway state is active, isolated or revoked")
)

// ValidTenantID reports whether id is a well-formed tenant id. A tenant id
// goes into stream, subject and bucket names (names panics on a bad one):
// one from outside is checked with this before it is used.
func ValidTenantID(id string) bool {
	if len(id) < 2 || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(id)-1:
		default:
			return false
		}
	}
	return true
}

// ValidSerial reports whether s is a well-formed gateway serial (the Thingsee
// TUID format: 4 uppercase letters, 2 digits, 11 of A-Z0-9).
func ValidSerial(s string) bool { return thingsee.ValidTUID(s) }

// ErrLabelsInvalid is returned for labels that break the rules.
var ErrLabelsInvalid = fault.Define("registry.labels_invalid", fault.InvalidArgument, "labels: at most 32, keys of 1 to 63 characters [a-z0-9._/-] starting with a letter or digit, values of at most 256 printable characters")

// ValidLabels reports whether labels keep the rules of ErrLabelsInvalid.
func ValidLabels(labels map[string]string) bool {
	if len(labels) > 32 {
		return false
	}
	for k, v := range labels {
		if len(k) == 0 || len(k) > 63 || len(v) > 256 {
			return false
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '/' || c == '-')
			if !ok {
				return false
			}
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f {
				return false
			}
		}
	}
	return true
}

// ErrDeploymentGroupInvalid is returned for a malformed deploymentGroupId.
var ErrDeploymentGroupInvalid = fault.Define("registry.deployment_group_invalid", fault.InvalidArgument, "a deploymentGroupId is {env}{country}00{customer part}: env un, pr, dm or rd; country an ISO 3166-1 alpha-2 code in lowercase or xx; customer part at most 32 of a-z and 0-9")

// iso3166 holds the ISO 3166-1 alpha-2 codes, lowercase, concatenated.
const iso3166 = "adaeafagaialamaoaqarasatauawaxazbabbbdbebfbgbhbibjblbmbnbobqbrbsbtbvbwbybzcacccdcfcgchcickclcmcncocrcucvcwcxcyczdedjdkdmdodzeceeegeheresetfifjfkfmfofrgagbgdgegfggghgiglgmgngpgqgrgsgtgugwgyhkhmhnhrhthuidieiliminioiqirisitjejmjojpkekgkhkikmknkpkrkwkykzlalblclilklrlsltlulvlymamcmdmemfmgmhmkmlmmmnmompmqmrmsmtmumvmwmxmymznancnenfngninlnonpnrnunzompapepfpgphpkplpmpnprpsptpwpyqarerorsrurwsasbscsdsesgshsisjskslsmsnsosrssstsvsxsysztctdtftgthtjtktltmtntotrtttvtwtzuaugumusuyuzvavcvevgvivnvuwfwsyeytzazmzw"

// ValidDeploymentGroupID reports whether id has Thingsee's deployment
// group form: {env 2}{country 2}{reserved 2}{customer part}.
func ValidDeploymentGroupID(id string) bool {
	if len(id) < 6 || len(id) > 38 {
		return false
	}
	switch id[:2] {
	case "un", "pr", "dm", "rd":
	default:
		return false
	}
	country := id[2:4]
	known := country == "xx"
	for i := 0; i+2 <= len(iso3166) && !known; i += 2 {
		known = iso3166[i:i+2] == country
	}
	if !known || id[4:6] != "00" {
		return false
	}
	for i := 6; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
