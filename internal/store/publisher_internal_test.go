package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParseAck reads each kind of answer JetStream gives to a publish;
// anything not recognisably a success is a failure.
func TestParseAck(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		status    string
		duplicate bool
		fails     bool
		apiCode   jetstream.ErrorCode
	}{
		{name: "stored", data: `{"stream":"MSG_acme","seq":42}`},
		{name: "stored with domain", data: `{"stream":"MSG_acme","domain":"hub","seq":42}`},
		{name: "duplicate as the stream writes it", data: `{"stream":"MSG_acme","seq":42,"duplicate": true}`, duplicate: true},
		{name: "duplicate as JSON encodes it", data: `{"stream":"MSG_acme","seq":42,"duplicate":true}`, duplicate: true},
		{name: "duplicate false", data: `{"stream":"MSG_acme","seq":42,"duplicate":false}`},
		{name: "wrong expected stream", data: `{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, fails: true, apiCode: 10060},
		{name: "store failed", data: `{"stream":"MSG_acme","error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}`, fails: true, apiCode: 10077},
		{name: "no stream", status: "503", fails: true},
		{name: "empty", fails: true},
		{name: "not an ack", data: `hello`, fails: true},
		{name: "sequence 0 without an error", data: `{"stream":"MSG_acme","seq":0}`, fails: true},
		{name: "no sequence", data: `{"stream":"MSG_acme","sequence":42}`, fails: true},
		{name: "sequence not a number", data: `{"stream":"MSG_acme","seq":"42"}`, fails: true},
		{name: "sequence with a space", data: `{"stream":"MSG_acme","seq": 10}`},
		{name: "unreadable error", data: `{"error":`, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Data: []byte(tc.data), Header: nats.Header{}}
			if tc.status != "" {
				m.Header.Set("Status", tc.status)
			}
			dup, err := parseAck(m)
			if (err != nil) != tc.fails {
				t.Fatalf("err %v, want failure %v", err, tc.fails)
			}
			if dup != tc.duplicate {
				t.Errorf("duplicate %v, want %v", dup, tc.duplicate)
			}
			if tc.apiCode != 0 {
				var api *jetstream.APIError
				if !errors.As(err, &api) || api.ErrorCode != tc.apiCode {
					t.Errorf("err %v, want API error %d", err, tc.apiCode)
				}
			}
		})
	}
}

// TestParseAckOfTheServer reads the answers nats-server itself gives (not
// written by hand): each success is one, each refusal is a failure with
// its API error code, and an atomic batch's commit ends as publishBatch
// checks. It guards the byte scan against a change of the server's format.
func TestParseAckOfTheServer(t *testing.T) {
	srv, err := server.NewServer(&server.Options{ServerName: "acks", DontListen: true, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ACKS", Subjects: []string{"acks.>"},
		MaxMsgSize: 512, AllowAtomicPublish: true, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	// A channel, not NextMsg: that turns a no-responders answer into an
	// error, while the publisher's subscription gets the message itself.
	answers := make(chan *nats.Msg, 1)
	if _, err := nc.ChanSubscribe("answers.*", answers); err != nil {
		t.Fatal(err)
	}
	n := 0
	// answer publishes m with a reply subject of its own, as the publisher
	// does, and returns what comes back.
	answer := func(t *testing.T, m *nats.Msg) *nats.Msg {
		t.Helper()
		n++
		m.Reply = fmt.Sprintf("answers.%d", n)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		var a *nats.Msg
		select {
		case a = <-answers:
		case <-ctx.Done():
			t.Fatal("no answer")
		}
		if a.Subject != m.Reply {
			t.Fatalf("answer on %s, want %s", a.Subject, m.Reply)
		}
		return a
	}
	msg := func(subject, id, data string, hdr ...string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = []byte(data)
		m.Header.Set(jetstream.MsgIDHeader, id)
		for i := 0; i+1 < len(hdr); i += 2 {
			m.Header.Set(hdr[i], hdr[i+1])
		}
		return m
	}
	tests := []struct {
		name      string
		msg       *nats.Msg
		duplicate bool
		apiCode   jetstream.ErrorCode // 0: a success
		noStream  bool
	}{
		{name: "stored", msg: msg("acks.a", "a", "{}")},
		{name: "duplicate", msg: msg("acks.a", "a", "{}"), duplicate: true},
		{name: "too large", msg: msg("acks.b", "b", strings.Repeat("x", 1000)), apiCode: 10054},
		{name: "wrong expected stream", msg: msg("acks.c", "c", "{}", jetstream.ExpectedStreamHeader, "OTHER"), apiCode: 10060},
		{name: "expected stream", msg: msg("acks.d", "d", "{}", jetstream.ExpectedStreamHeader, "ACKS")},
		{name: "batch of a duplicate alone", msg: msg("acks.a", "a", "{}", hdrBatchID, "b1", hdrBatchSeq, "1", hdrBatchCommit, "1"), apiCode: errCodeBatchDuplicate},
		{name: "no stream", msg: msg("nowhere.a", "e", "{}"), noStream: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := answer(t, tc.msg)
			dup, err := parseAck(a)
			switch {
			case tc.noStream:
				if !errors.Is(err, jetstream.ErrNoStreamResponse) {
					t.Fatalf("answer %q (%v): %v, want no stream", a.Data, a.Header, err)
				}
			case tc.apiCode != 0:
				var api *jetstream.APIError
				if !errors.As(err, &api) || api.ErrorCode != tc.apiCode {
					t.Fatalf("answer %q: %v, want API error %d", a.Data, err, tc.apiCode)
				}
			case err != nil:
				t.Fatalf("answer %q: %v, want a success", a.Data, err)
			}
			if dup != tc.duplicate {
				t.Errorf("answer %q: duplicate %v, want %v", a.Data, dup, tc.duplicate)
			}
		})
	}
	t.Run("batch", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			m := msg("acks.batch", fmt.Sprintf("batch-%d", i), "{}", hdrBatchID, "b2", hdrBatchSeq, fmt.Sprint(i))
			if i < 3 {
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
				continue
			}
			m.Header.Set(hdrBatchCommit, "1")
			a := answer(t, m)
			if dup, err := parseAck(a); err != nil || dup {
				t.Fatalf("commit answer %q: duplicate %v, %v; want a success", a.Data, dup, err)
			}
			if want := `"batch":"b2","count":3}`; !strings.HasSuffix(string(a.Data), want) {
				t.Errorf("commit answer %q, want one ending in %s", a.Data, want)
			}
		}
	})
}
