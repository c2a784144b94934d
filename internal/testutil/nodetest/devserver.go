package nodetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// BuildBinary builds the iotransit command into the test's temporary
// directory and returns its path.
func BuildBinary(t testing.TB) string {
	t.Helper()
	return BuildCommand(t, "iotransit")
}

// BuildCommand builds the command cmd/NAME of the module into the test's
// temporary directory and returns its path.
func BuildCommand(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/iotransit/iotransit/cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// DevServer is an `iotransit serve --dev` process of a built binary, on
// its own data directory and loopback ports: for tests of the binary
// itself (kill -9, restarts, what it writes, its cost seen from outside).
type DevServer struct {
	Bin, Dir  string
	MQTT, API string // host:port
	LogLevel  string
	// Args are more flags of serve, e.g. a raised --msg-rate.
	Args []string
	// Cmd is the running process; Out collects its standard output and
	// error.
	Cmd *exec.Cmd
	Out *testutil.SyncBuffer
}

// StartDevServer starts bin as `serve --dev [args]` on a new data
// directory and free ports, and waits for its banner; it is killed at the test's end if
// it still runs.
func StartDevServer(t testing.TB, bin, logLevel string, args ...string) *DevServer {
	t.Helper()
	s := &DevServer{Bin: bin, Dir: t.TempDir(), LogLevel: logLevel, Args: args,
		MQTT: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), API: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}
	return s.Restart(t)
}

// Restart starts the server (again) on its data directory and ports, as a
// new process, and waits for its banner.
func (s *DevServer) Restart(t testing.TB) *DevServer {
	t.Helper()
	n := &DevServer{Bin: s.Bin, Dir: s.Dir, MQTT: s.MQTT, API: s.API, LogLevel: s.LogLevel, Args: s.Args, Out: &testutil.SyncBuffer{}}
	n.Cmd = exec.Command(n.Bin, append([]string{"serve", "--dev", "--data-dir", n.Dir, "--mqtt-addr", n.MQTT, "--api-addr", n.API, "--log-level", n.LogLevel}, n.Args...)...)
	n.Cmd.Stdout, n.Cmd.Stderr = n.Out, n.Out
	if err := n.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.Cmd.ProcessState == nil {
			_ = n.Cmd.Process.Kill()
			_ = n.Cmd.Wait()
		}
	})
	testutil.Eventually(t, 60*time.Second, 50*time.Millisecond, func() error {
		if n.Cmd.ProcessState != nil {
			return fmt.Errorf("the server exited: %v; output:\n%s", n.Cmd.ProcessState, n.Out)
		}
		if !strings.Contains(n.Out.String(), "mosquitto_pub") {
			return fmt.Errorf("no banner yet; output:\n%s", n.Out)
		}
		return nil
	})
	return n
}

// Stop sends sig and waits at most within for the process to end; on a
// timeout it asks for a goroutine dump (SIGQUIT) and fails the test.
func (s *DevServer) Stop(t testing.TB, sig os.Signal, within time.Duration) error {
	t.Helper()
	_ = s.Cmd.Process.Signal(sig)
	exited := make(chan error, 1)
	go func() { exited <- s.Cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(within):
		_ = s.Cmd.Process.Signal(quitSignal)
		<-exited
		t.Fatalf("the server did not stop within %s of %v; output:\n%s", within, sig, s.Out)
		return errors.New("unreachable")
	}
}

// GatewayFile is the path of one of the dev gateway's files (ca.pem,
// cert.pem, key.pem).
func (s *DevServer) GatewayFile(name string) string {
	return filepath.Join(s.Dir, node.DevTenant, "gateways", node.DevGateway, name)
}

// Operator returns a client of the server's API with the operator key.
func (s *DevServer) Operator(t testing.TB) *client.Client {
	t.Helper()
	caPEM, err := os.ReadFile(s.GatewayFile("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(s.Dir, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: s.API, CAPEM: caPEM, Credential: strings.TrimSpace(string(key)), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// EnrollmentToken registers gateway serial in the dev tenant, as an
// operator does, and returns a one-time enrollment token for it.
func (s *DevServer) EnrollmentToken(t testing.TB, serial string) string {
	t.Helper()
	ctx, op := context.Background(), s.Operator(t)
	if _, err := op.RegisterGateway(ctx, node.DevTenant, client.RegisterGatewayRequest{Serial: serial}); err != nil {
		t.Fatal(err)
	}
	tok, err := op.CreateEnrollmentToken(ctx, node.DevTenant, client.CreateEnrollmentTokenRequest{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// Uplink connects as the dev gateway.
func (s *DevServer) Uplink(t testing.TB) *gateway.Uplink {
	t.Helper()
	tlsCfg, err := gateway.TLSFiles(s.GatewayFile("cert.pem"), s.GatewayFile("key.pem"), s.GatewayFile("ca.pem"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := gateway.Dial(ctx, gateway.UplinkConfig{Addr: s.MQTT, Serial: node.DevGateway, TLS: tlsCfg})
	if err != nil {
		t.Fatalf("dial: %v\nserver output:\n%s", err, s.Out)
	}
	return u
}
