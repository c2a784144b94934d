package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	testPub  = testKey.Public().(ed25519.PublicKey)
)

// chain returns n correctly chained entries of tenant.
func chain(tenant string, n int) []Entry {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	out := make([]Entry, 0, n)
	prev := zeroHash
	for i := 1; i <= n; i++ {
		e := Entry{
			Tenant: tenant, Seq: uint64(i), Time: t0.Add(time.Duration(i) * time.Second),
			Actor: "operator", Action: "registry.gateway.register", Target: fmt.Sprintf("gateway:TSGW06DEV%08d", i),
			Source: "192.0.2.1:4000", Outcome: "ok", Detail: map[string]string{"n": fmt.Sprint(i)}, Prev: prev,
		}
		e.Hash = hashEntry(&e)
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

// rechain recomputes Prev and Hash from entry index i on, as an attacker
// who knows the algorithm would.
func rechain(entries []Entry, i int) []Entry {
	for ; i < len(entries); i++ {
		entries[i].Prev = zeroHash
		if i > 0 {
			entries[i].Prev = entries[i-1].Hash
		}
		entries[i].Hash = hashEntry(&entries[i])
	}
	return entries
}

// checkpoint signs entry seq of entries with key.
func checkpoint(key ed25519.PrivateKey, entries []Entry, seq uint64) Checkpoint {
	e := entries[seq-1]
	c := Checkpoint{Tenant: e.Tenant, Seq: e.Seq, Hash: e.Hash, Time: e.Time.Add(time.Millisecond)}
	signCheckpoint(&c, key)
	return c
}

func TestAuditVerifyEntries(t *testing.T) {
	cases := []struct {
		name        string
		build       func() ([]Entry, []Checkpoint)
		pub         ed25519.PublicKey // testPub if nil
		ok          bool
		firstBroken uint64
		problem     string // a part of Report.Problem
		signed      uint64
		unsigned    uint64
	}{
		{
			name:  "an empty log",
			build: func() ([]Entry, []Checkpoint) { return nil, nil },
			ok:    true,
		},
		{
			name:     "an unsigned chain",
			build:    func() ([]Entry, []Checkpoint) { return chain("acme", 5), nil },
			ok:       true,
			problem:  "entries after the last checkpoint (seq 1..5) are not yet signed",
			unsigned: 5,
		},
		{
			name: "a signed chain",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 8)
				return es, []Checkpoint{checkpoint(testKey, es, 4), checkpoint(testKey, es, 8)}
			},
			ok: true, signed: 8,
		},
		{
			name: "a signed chain with a newer unsigned tail",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 10)
				return es, []Checkpoint{checkpoint(testKey, es, 8), checkpoint(testKey, es, 4)}
			},
			ok: true, signed: 8, unsigned: 2, problem: "(seq 9..10) are not yet signed",
		},
		{
			name: "a changed actor",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[2].Actor = "apikey:someone-else"
				return es, nil
			},
			firstBroken: 3, problem: "entry 3: hash does not match its content",
		},
		{
			name: "a changed detail value",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[3].Detail = map[string]string{"n": "40"}
				return es, nil
			},
			firstBroken: 4, problem: "entry 4: hash does not match its content",
		},
		{
			name: "an added detail key",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[3].Detail = map[string]string{"n": "4", "x": ""}
				return es, nil
			},
			firstBroken: 4, problem: "entry 4: hash does not match its content",
		},
		{
			name: "a time moved by one nanosecond",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[0].Time = es[0].Time.Add(time.Nanosecond)
				return es, nil
			},
			firstBroken: 1, problem: "entry 1: hash does not match its content",
		},
		{
			name: "a changed hash field",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[4].Hash = strings.Repeat("a", 64)
				return es, nil
			},
			firstBroken: 5, problem: "entry 5: hash does not match its content",
		},
		{
			name: "a changed seq",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[2].Seq = 30
				return es, nil
			},
			firstBroken: 3, problem: "the entry stored where entry 3 belongs does not match its hash (it claims seq 30)",
		},
		{
			name:        "a deleted first entry",
			build:       func() ([]Entry, []Checkpoint) { return chain("acme", 5)[1:], nil },
			firstBroken: 1, problem: "entry 1 is missing (the log starts at entry 2)",
		},
		{
			name: "a deleted middle entry",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				return slices.Delete(es, 2, 3), nil
			},
			firstBroken: 3, problem: "entry 3 is missing (gap after 2)",
		},
		{
			name: "a deleted entry, the rest renumbered and rehashed",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 8)
				cps := []Checkpoint{checkpoint(testKey, es, 4), checkpoint(testKey, es, 8)}
				es = slices.Delete(es, 2, 3)
				for i := 2; i < len(es); i++ {
					es[i].Seq--
				}
				return rechain(es, 2), cps
			},
			firstBroken: 1, problem: "checkpoint at 4 does not match the chain: an entry in 1..4 was changed after it was signed",
		},
		{
			name: "two entries swapped",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[1], es[2] = es[2], es[1]
				return es, nil
			},
			firstBroken: 2, problem: "entry 3 appears before entry 2 (entries are reordered)",
		},
		{
			name: "an entry duplicated at the end",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				return append(es, es[4]), nil
			},
			firstBroken: 6, problem: "entry 5 appears again where entry 6 belongs (duplicated or reordered)",
		},
		{
			name: "an entry of another tenant",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[2] = chain("other", 5)[2]
				return es, nil
			},
			firstBroken: 3, problem: `entry 3 belongs to tenant "other"`,
		},
		{
			name: "an entry that skips its predecessor",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 5)
				es[2].Prev = es[0].Hash
				es[2].Hash = hashEntry(&es[2])
				return es, nil
			},
			firstBroken: 3, problem: "entry 3: prev does not match the hash of entry 2",
		},
		{
			name: "a first entry with a non-zero prev",
			build: func() ([]Entry, []Checkpoint) {
				return rechainFrom(chain("acme", 3), strings.Repeat("1", 64)), nil
			},
			firstBroken: 1, problem: "entry 1: prev is not 64 zeros",
		},
		{
			name: "a rewrite with recomputed hashes",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 10)
				cps := []Checkpoint{checkpoint(testKey, es, 4), checkpoint(testKey, es, 8), checkpoint(testKey, es, 10)}
				es[5].Outcome = "ko"
				return rechain(es, 5), cps
			},
			firstBroken: 5, problem: "checkpoint at 8 does not match the chain: an entry in 5..8 was changed after it was signed",
			signed: 4,
		},
		{
			name: "a checkpoint signed by another key",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 8)
				return es, []Checkpoint{checkpoint(testKey, es, 4), checkpoint(otherKey, es, 8)}
			},
			firstBroken: 5, problem: fmt.Sprintf("checkpoint at 8 was signed by an unknown key (key id %q)", KeyID(otherKey.Public().(ed25519.PublicKey))),
			signed: 4,
		},
		{
			name: "a checkpoint verified with the wrong key",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 4)
				return es, []Checkpoint{checkpoint(testKey, es, 4)}
			},
			pub:         otherKey.Public().(ed25519.PublicKey),
			firstBroken: 1, problem: "checkpoint at 4 was signed by an unknown key",
		},
		{
			name: "a checkpoint with one flipped signature bit",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 4)
				c := checkpoint(testKey, es, 4)
				c.Signature[10] ^= 1
				return es, []Checkpoint{c}
			},
			firstBroken: 1, problem: "checkpoint at 4 has a bad signature (entries from 1 on are in doubt)",
		},
		{
			name: "a checkpoint moved to a rewritten head",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 4)
				c := checkpoint(testKey, es, 4)
				es[1].Actor = "system"
				es = rechain(es, 1)
				c.Hash = es[3].Hash
				return es, []Checkpoint{c}
			},
			firstBroken: 1, problem: "checkpoint at 4 has a bad signature",
		},
		{
			name: "a checkpoint with a changed time",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 4)
				c := checkpoint(testKey, es, 4)
				c.Time = c.Time.Add(time.Hour)
				return es, []Checkpoint{c}
			},
			firstBroken: 1, problem: "checkpoint at 4 has a bad signature",
		},
		{
			name: "a checkpoint of another tenant",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 4)
				return es, []Checkpoint{checkpoint(testKey, chain("other", 4), 4)}
			},
			firstBroken: 1, problem: `checkpoint at 4 belongs to tenant "other"`,
		},
		{
			name: "a checkpoint at 0",
			build: func() ([]Entry, []Checkpoint) {
				c := Checkpoint{Tenant: "acme", Hash: zeroHash}
				signCheckpoint(&c, testKey)
				return chain("acme", 2), []Checkpoint{c}
			},
			firstBroken: 1, problem: "checkpoint at 0 covers no entry",
		},
		{
			name: "a tail cut below a checkpoint",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 8)
				return es[:6], []Checkpoint{checkpoint(testKey, es, 4), checkpoint(testKey, es, 8)}
			},
			firstBroken: 7, problem: "checkpoint at 8 is beyond the last entry 6: entries 7..8 are missing",
			signed: 4,
		},
		{
			name: "every entry removed but the checkpoints",
			build: func() ([]Entry, []Checkpoint) {
				return nil, []Checkpoint{checkpoint(testKey, chain("acme", 3), 3)}
			},
			firstBroken: 1, problem: "checkpoint at 3 is beyond the last entry 0: entries 1..3 are missing",
		},
		{
			name: "no public key",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 2)
				return es, []Checkpoint{checkpoint(testKey, es, 2)}
			},
			pub:         ed25519.PublicKey{},
			firstBroken: 1, problem: "checkpoint at 2 cannot be checked: no valid public key was given",
		},
		{
			name: "the earliest of several problems wins",
			build: func() ([]Entry, []Checkpoint) {
				es := chain("acme", 10)
				cps := []Checkpoint{checkpoint(otherKey, es, 10)}
				es[6].Target = "x"
				return slices.Delete(es, 3, 4), cps
			},
			firstBroken: 1, problem: "checkpoint at 10 was signed by an unknown key",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub := tc.pub
			if pub == nil {
				pub = testPub
			}
			entries, cps := tc.build()
			r := VerifyEntries(entries, cps, pub)
			if r.OK != tc.ok || r.FirstBroken != tc.firstBroken || !strings.Contains(r.Problem, tc.problem) ||
				r.LastSignedSeq != tc.signed || r.Unsigned != tc.unsigned || r.Entries != uint64(len(entries)) || r.Checkpoints != len(cps) {
				t.Fatalf("report %+v\nwant ok %v, first broken %d, problem %q, signed %d, unsigned %d",
					r, tc.ok, tc.firstBroken, tc.problem, tc.signed, tc.unsigned)
			}
			if tc.problem == "" && r.Problem != "" {
				t.Fatalf("unexpected problem %q", r.Problem)
			}
		})
	}
}

func TestAuditVerifyAcceptsEntriesExpiredByRetention(t *testing.T) {
	es := chain("acme", 10)
	cps := []Checkpoint{checkpoint(testKey, es, 4), checkpoint(testKey, es, 8)}
	cases := []struct {
		name    string
		entries []Entry
		cps     []Checkpoint
		ok      bool
		first   uint64
		signed  uint64
	}{
		{"the head expired, signed before", es[4:], cps, true, 0, 8},
		{"the head expired, nothing signed", es[4:], nil, true, 0, 0},
		{"a gap after the expired head", slices.Delete(slices.Clone(es[4:]), 1, 2), cps, false, 6, 4},
		{"the first kept entry's prev rewritten", rechainFrom(slices.Clone(es[4:]), strings.Repeat("f", 64)), cps, false, 5, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier("acme", keyMap([]ed25519.PublicKey{testPub}), true)
			for i := range tc.entries {
				v.addEntry(&tc.entries[i], "")
			}
			for _, c := range tc.cps {
				v.addCheckpoint(c, "")
			}
			r := v.finish(nil)
			if r.OK != tc.ok || r.FirstBroken != tc.first || r.LastSignedSeq != tc.signed {
				t.Fatalf("report %+v; want ok %v first broken %d signed %d", r, tc.ok, tc.first, tc.signed)
			}
		})
	}
}

// rechainFrom gives the first entry a new prev and recomputes the chain.
func rechainFrom(es []Entry, prev string) []Entry {
	es[0].Prev = prev
	es[0].Hash = hashEntry(&es[0])
	return rechain(es, 1)
}

// lp is the length-prefixed text of the canonical encoding, written out
// independently of the encoder.
func lp(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func TestAuditCanonicalEncodingIsStable(t *testing.T) {
	e := Entry{
		Tenant: "acme", Seq: 1, Time: time.Unix(1767225600, 5).UTC(),
		Actor: "operator", Action: "pki.cert.issue", Target: "gateway:TSGW06DEV00000001", Source: "",
		Outcome: "ok", Detail: map[string]string{"b": "2", "a": "1"}, Prev: zeroHash,
	}
	var want []byte
	want = append(want, lp("iotransit/audit/v1/entry")...)
	want = append(want, lp("acme")...)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 1)             // seq
	want = append(want, 0, 0, 0, 0, 0x69, 0x55, 0xb9, 0x00) // 1767225600 s
	want = append(want, 0, 0, 0, 5)                         // 5 ns
	want = append(want, lp("operator")...)                  // actor
	want = append(want, lp("pki.cert.issue")...)            // action
	want = append(want, lp("gateway:TSGW06DEV00000001")...) // target
	want = append(want, 0, 0, 0, 0)                         // source ""
	want = append(want, lp("ok")...)                        // outcome
	want = append(want, 0, 0, 0, 2)                         // two detail pairs
	want = append(want, lp("a")...)                         // sorted keys
	want = append(want, lp("1")...)                         //
	want = append(want, lp("b")...)                         //
	want = append(want, lp("2")...)                         //
	want = append(want, lp(strings.Repeat("0", 64))...)     // prev
	if got := entryPreimage(&e); !bytes.Equal(got, want) {
		t.Fatalf("preimage\n got %x\nwant %x", got, want)
	}
	// A change of this value breaks every stored chain and every offline
	// verifier: it needs a new domain tag, not an edit. (It was checked
	// against an independent implementation of the documented encoding.)
	const golden = "6a51c23aadb2984d7a221aa28ba363e4cd7d7fbe4270e307fae837ec074ab530"
	if got := hashEntry(&e); got != golden {
		t.Fatalf("hash %s, want %s", got, golden)
	}

	c := Checkpoint{Tenant: "acme", Seq: 1, Hash: hashEntry(&e), Time: time.Unix(1767225601, 0).UTC(), KeyID: "0011223344556677"}
	var wantMsg []byte
	wantMsg = append(wantMsg, lp("iotransit/audit/v1/checkpoint")...)
	wantMsg = append(wantMsg, lp("acme")...)
	wantMsg = append(wantMsg, 0, 0, 0, 0, 0, 0, 0, 1)
	wantMsg = append(wantMsg, lp(c.Hash)...)
	wantMsg = append(wantMsg, 0, 0, 0, 0, 0x69, 0x55, 0xb9, 0x01, 0, 0, 0, 0)
	wantMsg = append(wantMsg, lp("0011223344556677")...)
	if got := checkpointMessage(&c); !bytes.Equal(got, wantMsg) {
		t.Fatalf("checkpoint message\n got %x\nwant %x", got, wantMsg)
	}
	sum := sha256Hex(testPub)
	if KeyID(testPub) != sum[:16] {
		t.Fatalf("key id %s, want %s", KeyID(testPub), sum[:16])
	}
}

func TestAuditCanonicalEncodingIsUnambiguous(t *testing.T) {
	base := chain("acme", 1)[0]
	pairs := []struct {
		name string
		a, b func(*Entry)
	}{
		{"text moved between fields", func(e *Entry) { e.Actor, e.Action = "ab", "c" }, func(e *Entry) { e.Actor, e.Action = "a", "bc" }},
		{"text moved between key and value", func(e *Entry) { e.Detail = map[string]string{"ab": "c"} }, func(e *Entry) { e.Detail = map[string]string{"a": "bc"} }},
		{"a pair moved into a value", func(e *Entry) { e.Detail = map[string]string{"a": "b", "c": "d"} }, func(e *Entry) {
			e.Detail = map[string]string{"a": "b\x00\x00\x00\x01c\x00\x00\x00\x01d"}
		}},
		{"tenant and actor", func(e *Entry) { e.Tenant, e.Actor = "acme", "x" }, func(e *Entry) { e.Tenant, e.Actor = "acmex", "" }},
		{"an empty detail value", func(e *Entry) { e.Detail = nil }, func(e *Entry) { e.Detail = map[string]string{"": ""} }},
	}
	for _, tc := range pairs {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base, base
			tc.a(&a)
			tc.b(&b)
			if hashEntry(&a) == hashEntry(&b) {
				t.Fatal("two different entries have one hash")
			}
		})
	}
	t.Run("nil and empty detail are the same entry", func(t *testing.T) {
		a, b := base, base
		a.Detail, b.Detail = nil, map[string]string{}
		if hashEntry(&a) != hashEntry(&b) {
			t.Fatal("nil and empty detail differ")
		}
	})
}

func TestAuditDecodeEntryRefusesAnyOtherForm(t *testing.T) {
	e := chain("acme", 1)[0]
	e.Detail = map[string]string{"b": "x\"y\\z\n\u2028<&>", "a": "é"}
	e.Hash = hashEntry(&e)
	good := string(appendEntryJSON(nil, &e))
	bVal := `"b":` + string(appendJSONString(nil, e.Detail["b"]))
	if !strings.Contains(good, `"detail":{"a":"é",`+bVal+`}`) || !strings.Contains(bVal, `\u000a`) {
		t.Fatalf("stored form %s", good)
	}
	var viaEncodingJSON Entry
	if err := json.Unmarshal([]byte(good), &viaEncodingJSON); err != nil || !sameEntry(&viaEncodingJSON, &e) {
		t.Fatalf("encoding/json reads %+v, %v", viaEncodingJSON, err)
	}
	cases := []struct {
		name string
		data string
		ok   bool
	}{
		{"the stored form", good, true},
		{"a key in another case", strings.Replace(good, `"actor"`, `"Actor"`, 1), false},
		{"an unknown key", strings.Replace(good, `{"tenant"`, `{"x":1,"tenant"`, 1), false},
		{"a repeated key", strings.Replace(good, `{"tenant"`, `{"outcome":"ko","tenant"`, 1), false},
		{"detail keys out of order", strings.Replace(good, `"detail":{"a":"é",`+bVal+`}`, `"detail":{`+bVal+`,"a":"é"}`, 1), false},
		{"an escaped character", strings.Replace(good, `"acme"`, `"\u0061cme"`, 1), false},
		{"a comma in the time", strings.Replace(good, ":06.000000006Z", ":06,000000006Z", 1), false},
		{"another time zone spelling", strings.Replace(good, "03:04:06.000000006Z", "05:04:06.000000006+02:00", 1), false},
		{"a space", strings.Replace(good, `"seq":1`, `"seq": 1`, 1), false},
		{"an empty detail", strings.Replace(good, `"prev"`, `"detail":{},"prev"`, 1), false},
		{"trailing data", good + `{}`, false},
		{"null", `null`, false},
		{"an array", `[` + good + `]`, false},
		{"cut short", good[:len(good)-1], false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "the stored form" && tc.data == good {
				t.Fatal("the case did not change the stored form")
			}
			got, err := decodeEntry([]byte(tc.data))
			if (err == nil) != tc.ok {
				t.Fatalf("decode: %v", err)
			}
			if tc.ok && !sameEntry(&got, &e) {
				t.Fatalf("decoded %+v, want %+v", got, e)
			}
		})
	}
}

// sameEntry reports whether two entries mean the same.
func sameEntry(a, b *Entry) bool {
	if len(a.Detail) != len(b.Detail) {
		return false
	}
	for k, v := range a.Detail {
		if w, ok := b.Detail[k]; !ok || v != w {
			return false
		}
	}
	return a.Tenant == b.Tenant && a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Actor == b.Actor &&
		a.Action == b.Action && a.Target == b.Target && a.Source == b.Source && a.Outcome == b.Outcome &&
		a.Prev == b.Prev && a.Hash == b.Hash
}

// FuzzAuditVerifyDetectsChangedBytes changes one byte of one stored entry of a
// signed chain and verifies it as Log.Verify does: any change must be
// reported at that entry.
func FuzzAuditVerifyDetectsChangedBytes(f *testing.F) {
	entries := chain("acme", 6)
	stored := make([][]byte, len(entries))
	for i := range entries {
		stored[i] = appendEntryJSON(nil, &entries[i])
	}
	cps := []Checkpoint{checkpoint(testKey, entries, 3), checkpoint(testKey, entries, 6)}
	f.Add(uint8(2), uint16(0), byte('x'))
	f.Add(uint8(4), uint16(60), byte('1'))
	f.Add(uint8(0), uint16(120), byte('A'))
	f.Fuzz(func(t *testing.T, which uint8, pos uint16, b byte) {
		i := int(which) % len(stored)
		data := bytes.Clone(stored[i])
		data[int(pos)%len(data)] = b
		changed := !bytes.Equal(data, stored[i])
		v := newVerifier("acme", keyMap([]ed25519.PublicKey{testPub}), false)
		for j := range stored {
			if j != i {
				v.addEntry(&entries[j], "")
				continue
			}
			if e, err := decodeEntry(data); err != nil {
				v.addEntry(nil, err.Error())
			} else {
				v.addEntry(&e, "")
			}
		}
		for _, c := range cps {
			v.addCheckpoint(c, "")
		}
		r := v.finish(nil)
		switch {
		case !changed && !r.OK:
			t.Fatalf("an unchanged entry failed verification: %+v", r)
		case changed && (r.OK || r.FirstBroken != uint64(i+1)):
			t.Fatalf("entry %d changed to %s: report %+v", i+1, data, r)
		}
	})
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
