package names_test

import (
	"testing"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// TestNamesAreTheStoredLayout pins every name: they are the layout of data
// on disk and in clusters, so a change would orphan stored data.
func TestNamesAreTheStoredLayout(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{names.MessageStream("acme"), "MSG_acme"},
		{names.RejectedStream("acme"), "REJ_acme"},
		{names.AuditStream("_system"), "AUD__system"},
		{names.DeadLetterStream("acme", "i1"), "DLQ_acme_i1"},
		{names.GatewaysBucket("acme"), "iot_acme_gateways"},
		{names.CredentialsBucket("acme"), "iot_acme_credentials"},
		{names.IntegrationsBucket("acme"), "iot_acme_integrations"},
		{names.IntegrationStateBucket("acme"), "iot_acme_integration_state"},
		{names.IntegrationConsumer("i1"), "fwd_i1"},
		{names.Messages("acme"), "iot.acme.msg.>"},
		{names.Message("acme", "TSGW06DEV00000001", "TSEN01DEV00000042", 12100), "iot.acme.msg.TSGW06DEV00000001.TSEN01DEV00000042.12100"},
		{names.MessageFilter("acme", "*", "TSEN01DEV00000042", "*"), "iot.acme.msg.*.TSEN01DEV00000042.*"},
		{names.Redriven("acme"), "iot.acme.redrive.>"},
		{names.RedrivenTo("acme", "i1"), "iot.acme.redrive.i1.>"},
		{names.RedriveSubject("acme", "i1", "TSGW06DEV00000001", "TSEN01DEV00000042", 2100), "iot.acme.redrive.i1.TSGW06DEV00000001.TSEN01DEV00000042.2100"},
		{names.RejectedMessages("acme"), "iot.acme.rej.>"},
		{names.Rejected("acme", "TSGW06DEV00000001"), "iot.acme.rej.TSGW06DEV00000001"},
		{names.DeadLetter("acme", "i1"), "iot.acme.dlq.i1"},
		{names.DeadLetters("acme"), "iot.acme.dlq.*"},
		{names.RedriveFilter("acme", "*", "*", "TSEN01DEV00000042", "*"), "iot.acme.redrive.*.*.TSEN01DEV00000042.*"},
		{names.AuditEntry("acme"), "audit.acme.entry"},
		{names.AuditCheckpoint("acme"), "audit.acme.checkpoint"},
		{names.AuditIndexStream("acme"), "AUDX_acme"},
		{names.AuditIndex("acme", "actor", "0123abcd"), "auditx.acme.actor.0123abcd"},
		{names.AuditIndexes("acme"), "auditx.acme.>"},
		{names.FirmwareKeysBucket, "iotransit_firmware_keys"},
		{names.KMSBucket, "iotransit_kms"},
		{names.KMSStream, "KMS_KEYS"},
		{names.KMSKeys, "kms.keys.>"},
		{names.FirmwareNoticesBucket, "iotransit_firmware_notices"},
		{names.FirmwareBucket("acme"), "iot_acme_firmware"},
		{names.FirmwareImages("acme"), "iot_acme_firmware_images"},
		{names.FirmwareNotice("acme", "TSGW06DEV00000001"), "acme.TSGW06DEV00000001"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestNamesRefuseUnvalidatedIDs: a part that is not one NATS token (which
// could widen a subscription or reach another tenant's subjects) panics.
func TestNamesRefuseUnvalidatedIDs(t *testing.T) {
	bad := []string{"", "a.b", "*", ">", "acme.>", "a b", "a\tb", "a\x00b", "a\x7fb", "ä", string(make([]byte, 129))}
	builders := map[string]func(string) string{
		"MessageStream":    names.MessageStream,
		"RejectedStream":   names.RejectedStream,
		"AuditStream":      names.AuditStream,
		"DeadLetterStream": func(s string) string { return names.DeadLetterStream("acme", s) },
		"GatewaysBucket":   names.GatewaysBucket,
		"Messages":         names.Messages,
		"Message gateway":  func(s string) string { return names.Message("acme", s, "TSEN01DEV00000042", 1) },
		"Message tuid":     func(s string) string { return names.Message("acme", "TSGW06DEV00000001", s, 1) },
		"MessageFilter":    func(s string) string { return names.MessageFilter(s, "*", "*", "*") },
		"RedriveSubject":   func(s string) string { return names.RedriveSubject("acme", s, "G", "T", 1) },
		"Rejected":         func(s string) string { return names.Rejected("acme", s) },
		"DeadLetters":      names.DeadLetters,
		"RedriveFilter":    func(s string) string { return names.RedriveFilter(s, "*", "*", "*", "*") },
		"AuditEntry":       names.AuditEntry,
		"AuditIndexStream": names.AuditIndexStream,
		"AuditIndex key":   func(s string) string { return names.AuditIndex("acme", "actor", s) },
		"IntegrationState": names.IntegrationStateBucket,
		"FirmwareBucket":   names.FirmwareBucket,
		"FirmwareImages":   names.FirmwareImages,
		"FirmwareNotice":   func(s string) string { return names.FirmwareNotice("acme", s) },
	}
	for name, build := range builders {
		for _, b := range bad {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s(%q) did not panic", name, b)
					}
				}()
				build(b)
			}()
		}
	}
	// "*" is a wildcard only where a filter takes one.
	func() {
		defer func() {
			if recover() == nil {
				t.Error(`Message with gateway "*" did not panic`)
			}
		}()
		names.Message("acme", "*", "T", 1)
	}()
}

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{
		"acme": true, "_system": true, "TSGW06DEV00000001": true, "a-b_c": true,
		"": false, "a.b": false, "a*": false, "a>": false, "a b": false, "é": false,
	} {
		if got := names.ValidToken(s); got != want {
			t.Errorf("ValidToken(%q) = %v, want %v", s, got, want)
		}
	}
}
