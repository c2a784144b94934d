package azure

import "testing"

func TestAzureHostNameCompletesBareHubNames(t *testing.T) {
	for in, want := range map[string]string{
		"myhub":                   "myhub.azure-devices.net",
		"MyHub":                   "myhub.azure-devices.net",
		"myhub.azure-devices.net": "myhub.azure-devices.net",
		"hub.example.cn":          "hub.example.cn",
		"localhost.":              "localhost",
		"::1":                     "::1",
		"":                        "",
	} {
		if got := HostName(in); got != want {
			t.Errorf("HostName(%q) = %q, want %q", in, got, want)
		}
	}
}
