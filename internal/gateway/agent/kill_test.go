package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// agentProc is a `gateway run` process.
type agentProc struct {
	cmd *exec.Cmd
	out *testutil.SyncBuffer
}

// startAgentProc runs bin as the agent with args; it is killed at the
// test's end if it still runs.
func startAgentProc(t *testing.T, bin string, args ...string) *agentProc {
	t.Helper()
	p := &agentProc{out: &testutil.SyncBuffer{}}
	p.cmd = exec.Command(bin, append([]string{"gateway", "run", "--log-level", "debug", "--status-interval", "200ms"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	p.waitFor(t, `"msg":"gateway agent running"`)
	return p
}

// waitFor waits until the agent's output holds s.
func (p *agentProc) waitFor(t *testing.T, s string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second*testutil.Slowdown(), 20*time.Millisecond, func() error {
		if p.cmd.ProcessState != nil {
			return fmt.Errorf("the agent exited: %v; output:\n%s", p.cmd.ProcessState, p.out)
		}
		if !strings.Contains(p.out.String(), s) {
			return fmt.Errorf("no %s yet in the agent's output:\n%s", s, tail(p.out.String()))
		}
		return nil
	})
}

// kill9 kills the agent with SIGKILL.
func (p *agentProc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// devMessages returns the dev tenant's messages of serial, oldest first.
func devMessages(t *testing.T, op *client.Client, serial string) []client.Message {
	t.Helper()
	var out []client.Message
	for m, err := range op.AllMessages(context.Background(), node.DevTenant, client.MessageQuery{Gateway: serial, Oldest: true, Limit: 1000}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestKill9WithCloudDown: the cloud is stopped, the agent queues the
// mesh's messages, is killed with SIGKILL, and started again; when the
// cloud is back every message is stored exactly once, in order per node,
// and the queue file held no message in plaintext.
func TestKill9WithCloudDown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := nodetest.BuildBinary(t)
	srv := nodetest.StartDevServer(t, bin, "warn")
	op := srv.Operator(t)
	ctx := context.Background()
	const serial = "TSGW06KIL00000001"
	if _, err := op.RegisterGateway(ctx, node.DevTenant, client.RegisterGatewayRequest{Serial: serial}); err != nil {
		t.Fatal(err)
	}
	tok, err := op.CreateEnrollmentToken(ctx, node.DevTenant, client.CreateEnrollmentTokenRequest{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	caFile := srv.GatewayFile("ca.pem")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Enroll, and take the mesh keys and nodes, in this process (the
	// cloud's delivery of keys is another part's); the agent process then
	// finds them on disk.
	nw := newNetwork(t, 5)
	a, err := agent.New(ctx, agent.Config{DataDir: dir, Server: "https://" + srv.API, MQTTAddr: srv.MQTT, ServerName: "localhost",
		CAPEM: caPEM, Serial: serial, EnrollToken: tok.Token, MeshAddr: "127.0.0.1:0", Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	nw.deliver(t, a)
	a.Close()

	if err := srv.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Logf("server stop: %v", err)
	}
	meshAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	args := []string{"--data-dir", dir, "--server", "https://" + srv.API, "--mqtt", srv.MQTT, "--server-name", "localhost",
		"--ca", caFile, "--serial", serial, "--mesh-addr", meshAddr}
	p := startAgentProc(t, bin, args...)

	const perNode = 400
	var frames [][]byte
	for c := uint32(0); c < perNode; c++ {
		for _, n := range nw.nodes {
			frames = append(frames, nw.frame(t, 2, n, 1, c))
		}
	}
	send(t, meshAddr, frames...)
	p.waitFor(t, fmt.Sprintf(`"depth":%d`, len(frames)))
	p.kill9(t)

	db, err := os.ReadFile(filepath.Join(dir, "queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{"TSEN01AGT", "tsmTuid", "12100"} {
		if bytes.Contains(db, []byte(marker)) {
			t.Errorf("the queue file holds %q in plaintext", marker)
		}
	}

	p = startAgentProc(t, bin, args...)
	srv = srv.Restart(t)
	op = srv.Operator(t)
	testutil.Eventually(t, 120*time.Second*testutil.Slowdown(), 200*time.Millisecond, func() error {
		if n := len(devMessages(t, op, serial)); n < len(frames) {
			return fmt.Errorf("%d of %d messages stored; agent:\n%s", n, len(frames), tail(p.out.String()))
		}
		return nil
	})
	checkOrdered(t, devMessages(t, op, serial), nw.nodes, 0, perNode-1)
}
