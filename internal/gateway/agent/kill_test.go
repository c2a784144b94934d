package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	token := srv.EnrollmentToken(t, serial)
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
		CAPEM: caPEM, Serial: serial, EnrollToken: token, MeshAddr: "127.0.0.1:0", Logger: testutil.Logger(t)})
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

// TestMeshSimThroughAgent: the real programs end to end — mesh-sim seals
// frames with the key file the cloud exports and sends them, with
// attacks, to a `gateway run` process enrolled with a token; the cloud
// delivers the keys and nodes to it; every genuine frame is stored, the
// attacks are dropped, and the gateway's status in the cloud counts them.
func TestMeshSimThroughAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	bin := nodetest.BuildBinary(t)
	srv := nodetest.StartDevServer(t, bin, "warn")
	op := srv.Operator(t)
	ctx := context.Background()
	const serial = "TSGW06SIM00000001"
	token := srv.EnrollmentToken(t, serial)
	if _, err := op.RotateMeshKey(ctx, node.DevTenant, client.MeshKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.AddMeshNodes(ctx, node.DevTenant, []uint32{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "mesh.key")
	kb, err := op.ExportMeshKeys(ctx, node.DevTenant)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	meshAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := startAgentProc(t, bin, "--data-dir", t.TempDir(), "--server", "https://"+srv.API, "--mqtt", srv.MQTT, "--server-name", "localhost",
		"--ca", srv.GatewayFile("ca.pem"), "--serial", serial, "--mesh-addr", meshAddr, "--enroll-token-file", tokFile)
	p.waitFor(t, `"msg":"mesh nodes"`)
	p.waitFor(t, `"msg":"mesh keys"`)
	// It listens on the mesh address only: no TCP listener, one UDP socket.
	_, port, _ := net.SplitHostPort(meshAddr)
	hexPort := fmt.Sprintf(":%04X", mustAtoi(t, port))
	if ls := listeningSockets(t, p.cmd.Process.Pid); len(ls) != 1 || !strings.HasPrefix(ls[0], "udp ") || !strings.HasSuffix(ls[0], hexPort) {
		t.Errorf("the agent listens on %v; want only UDP %s", ls, meshAddr)
	}

	out, err := exec.Command(bin, "mesh-sim", "--gateway", meshAddr, "--network-key-file", keyFile, "--nodes", "5",
		"--rate", "2.5", "--duration", "8s", "--replay", "3", "--forge", "2", "--unknown-node", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("mesh-sim: %v\n%s", err, out)
	}
	var good int
	if _, err := fmt.Sscanf(string(out[bytes.Index(out, []byte("sent ")):]), "sent %d genuine", &good); err != nil || good == 0 {
		t.Fatalf("mesh-sim output: %v\n%s", err, out)
	}
	// Each node sends every 2 s: mesh-sim's messages carry tsmTs in
	// seconds, and the cloud stores a sensor's identical message of the
	// same second once (its content id).
	testutil.Eventually(t, 30*time.Second*testutil.Slowdown(), 200*time.Millisecond, func() error {
		if n := len(devMessages(t, op, serial)); n != good {
			g, _ := op.GetGateway(ctx, node.DevTenant, serial)
			return fmt.Errorf("%d of %d messages stored; gateway %+v %+v; agent:\n%s", n, good, g.Mesh, g.QueueDepth, tail(p.out.String()))
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second*testutil.Slowdown(), 500*time.Millisecond, func() error {
		g, err := op.GetGateway(ctx, node.DevTenant, serial)
		if err != nil {
			return err
		}
		if g.Mesh == nil {
			return errors.New("no mesh counters on the gateway yet")
		}
		want := map[string]uint64{"replay": 3, "forged": 2, "unknown_node": 2}
		for r, n := range want {
			if g.Mesh.Dropped[r] != n {
				return fmt.Errorf("gateway shows dropped %v accepted %d, want %v", g.Mesh.Dropped, g.Mesh.Accepted, want)
			}
		}
		if g.Mesh.Accepted != uint64(good) {
			return fmt.Errorf("gateway shows %d accepted, want %d", g.Mesh.Accepted, good)
		}
		return nil
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// listeningSockets returns the sockets of process pid that listen: TCP in
// state LISTEN, and UDP sockets bound without a peer (which receive from
// anyone), as "tcp 127.0.0.1:PORT" or "udp …" from /proc (Linux).
func listeningSockets(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			local, remote, state := f[1], f[2], f[3]
			listening := strings.HasPrefix(proto, "tcp") && state == "0A" ||
				strings.HasPrefix(proto, "udp") && strings.HasSuffix(remote, ":0000")
			if listening {
				out = append(out, proto+" "+local)
			}
		}
	}
	return out
}
