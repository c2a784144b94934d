package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
)

// reencryptPoll is how often kms reencrypt --wait reads the job's progress.
const reencryptPoll = time.Second

// kmsReencryptCmd is "iotransit kms reencrypt".
var kmsReencryptCmd = command{name: "reencrypt", synopsis: "[--wait]", tenant: true,
	summary: "re-seal the tenant's stored records under the newest data key version, in the background (resumable); --wait shows the progress until it ends",
	flags: func(fs *flag.FlagSet) action {
		wait := fs.Bool("wait", false, "show the job's progress (on stderr, every "+shortDuration(reencryptPoll)+") until it ends")
		return func(ctx context.Context, e *env, _ []string) error {
			j, err := e.api.ReencryptKMS(ctx, e.tenant)
			if err != nil {
				return err
			}
			if *wait {
				if j, err = waitReencryption(ctx, e, j); err != nil {
					return err
				}
			}
			if err := e.show(j, reencryptTable(j)); err != nil {
				return err
			}
			if j.State == client.ReencryptFailed {
				return fmt.Errorf("the re-encryption failed: %s (run it again to resume)", j.LastError)
			}
			return nil
		}
	}}

// waitReencryption polls the tenant's job until it is no longer running,
// writing its progress to stderr when it changed.
func waitReencryption(ctx context.Context, e *env, j *client.KMSReencryption) (*client.KMSReencryption, error) {
	last := ""
	for j.State == client.ReencryptRunning {
		if line := reencryptProgress(j); line != last {
			fmt.Fprintln(e.stderr, line)
			last = line
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(reencryptPoll):
		}
		st, err := e.api.KMSStatus(ctx, e.tenant)
		if err != nil {
			return nil, err
		}
		if st.Reencryption == nil {
			return nil, errors.New("the tenant has no re-encryption job")
		}
		j = st.Reencryption
	}
	return j, nil
}

// reencryptProgress is one line of a job's progress.
func reencryptProgress(j *client.KMSReencryption) string {
	if j.Pass == 0 {
		return j.State + ": starting"
	}
	parts := []string{fmt.Sprintf("%s: pass %d to version %d", j.State, j.Pass, j.TargetVersion)}
	for _, r := range j.Records {
		parts = append(parts, fmt.Sprintf("%s %d/%d", r.Kind, r.Done, r.Total))
	}
	for _, s := range j.Streams {
		parts = append(parts, fmt.Sprintf("%s %d/%d", s.Stream, s.Position, s.Total))
	}
	return strings.Join(parts, ", ")
}

// reencryptTable writes a job: a row per kind of record and per stream
// (messages per key version, with those aged out marked).
func reencryptTable(j *client.KMSReencryption) func(w io.Writer) error {
	return func(w io.Writer) error {
		fmt.Fprintf(w, "re-encryption %s: pass %d to version %d, started %s, finished %s, node %s\n",
			j.State, j.Pass, j.TargetVersion, fmtTime(&j.StartedAt), fmtTime(j.FinishedAt), j.Node)
		if j.LastError != "" {
			fmt.Fprintf(w, "last error: %s\n", j.LastError)
		}
		t := newTable(w, "KIND", "WHAT", "DONE", "TOTAL", "RESEALED / BY VERSION", "FINISHED", "POSITION")
		for _, r := range j.Records {
			t.row("records", r.Kind, strconv.Itoa(r.Done), strconv.Itoa(r.Total), strconv.Itoa(r.Resealed), yesNo(r.Finished), r.Position)
		}
		for _, s := range j.Streams {
			var by []string
			for _, v := range s.Versions {
				c := fmt.Sprintf("v%d:%d", v.Version, v.Messages)
				if v.AgedOut {
					c += "(aged out)"
				}
				by = append(by, c)
			}
			t.row(s.Kind, s.Stream, strconv.FormatUint(s.Position, 10), strconv.FormatUint(s.Total, 10), strings.Join(by, " "), yesNo(s.Finished), "")
		}
		return t.flush()
	}
}
