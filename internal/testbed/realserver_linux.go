package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/pki"
	"golang.org/x/sys/unix"
)

// serverSources are the small servers the "java", "node" and "python"
// kinds run: a TLS server written against each platform's own library, as
// a team would write it, with no lingering of its own.
//
//go:embed servers/LingerTLSServer.java servers/server.js servers/server.py
var serverSources embed.FS

// A RealServer is a TLS server people run (nginx, HAProxy, Apache, Caddy),
// or one written in a few lines on a platform's own TLS library (OpenJDK's
// SSLServerSocket, Node's https, Python's ssl, openssl s_server), started
// by StartRealServer from a configuration it writes, so that tests and
// measurements can ask how it closes.
type RealServer struct {
	// Kind is what runs: one of RealServerKinds.
	Kind string
	// Addr is the HOST:PORT it listens on.
	Addr string
	// Version is the server's own version line.
	Version string
	// PID is the server's process (nginx's and Apache's master), for
	// counting its sockets and signalling it.
	PID int
}

// RealServerKinds lists the servers StartRealServer knows, and Binaries the
// program each one runs.
var (
	RealServerKinds = []string{"nginx", "haproxy", "apache", "caddy", "java", "node", "python", "openssl"}
	Binaries        = map[string]string{"nginx": "nginx", "haproxy": "haproxy", "apache": "apache2", "caddy": "caddy",
		"java": "java", "node": "node", "python": "python3", "openssl": "openssl"}
)

// RealServerConfig says how to run a real server.
type RealServerConfig struct {
	// Kind is one of RealServerKinds.
	Kind string
	// Binary is the program to run; empty means Binaries[Kind] from PATH.
	Binary string
	// Files is the PKI: the server's certificate and key, and the CA its
	// clients' certificates must chain to.
	Files pki.Files
	// Dir receives the configuration, logs and runtime files; the caller
	// removes it.
	Dir string
	// Host is the address to listen on; Port 0 picks a free port on Host
	// from this process's network namespace.
	Host string
	Port int
	// Version is tls.VersionTLS12 or tls.VersionTLS13 to allow only
	// that; 0 allows both.
	Version uint16
	// RequireCert makes the server require a client certificate issued
	// by Files.CA.
	RequireCert bool
	// Command makes the process; nil means exec.CommandContext.
	// Namespace.Command runs the server inside a network namespace.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Dial reaches the server, to know when it listens; nil means a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Workers, for nginx, runs a master process and that many forked
	// workers (as Debian's nginx runs) instead of one process; 0 is one
	// process. Apache always runs its event MPM: a parent and forked
	// children.
	Workers int
	// Env is extra environment for the server's process, KEY=VALUE,
	// after this process's and the kind's own: LD_PRELOAD of liblinger.so
	// and its LINGER_* settings. Helper programs (javac) do not get it.
	Env []string
}

// ErrNoBinary is returned by StartRealServer when the server's program is
// not installed.
var ErrNoBinary = errors.New("testbed: server program not installed")

// StartRealServer writes a configuration for cfg.Kind that serves HTTPS with
// the PKI's server certificate and answers every request with 200, starts
// the server in the foreground, and waits until it accepts connections.
// The returned stop function ends it: SIGTERM to its process group (Apache
// stops its children itself), SIGKILL after 5 s, and waits. Its error says
// if the server had died before stop was called.
func StartRealServer(cfg RealServerConfig) (*RealServer, func() error, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = Binaries[cfg.Kind]
	}
	if bin == "" {
		return nil, nil, fmt.Errorf("testbed: unknown server %q (want one of %s)", cfg.Kind, strings.Join(RealServerKinds, ", "))
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrNoBinary, bin, err)
	}
	if cfg.Kind == "java" {
		// The server is compiled at start; a JRE without a compiler
		// cannot run it.
		if _, err := exec.LookPath("javac"); err != nil {
			return nil, nil, fmt.Errorf("%w: javac: %w", ErrNoBinary, err)
		}
	}
	if cfg.Command == nil {
		cfg.Command = exec.CommandContext
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Port == 0 {
		if cfg.Port, err = freePort(cfg.Host); err != nil {
			return nil, nil, err
		}
	}
	s := &RealServer{Kind: cfg.Kind, Addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))}
	s.Version, err = serverVersion(cfg.Kind, path)
	if err != nil {
		return nil, nil, err
	}
	args, env, err := writeServerConfig(cfg, s.Addr)
	if err != nil {
		return nil, nil, err
	}
	logPath := filepath.Join(cfg.Dir, cfg.Kind+".out")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("testbed: %w", err)
	}
	defer out.Close() // the child has its own copy
	// The process's own context is never cancelled: stop ends it with
	// signals to its group.
	cmd := cfg.Command(context.Background(), path, args...)
	cmd.Env = append(append(os.Environ(), env...), cfg.Env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("testbed: starting %s: %w", cfg.Kind, err)
	}
	s.PID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	stopped := false
	stop := func() error {
		if stopped {
			return waitErr
		}
		stopped = true
		select {
		case err := <-exited:
			waitErr = fmt.Errorf("testbed: %s had exited: %v; %s", cfg.Kind, err, tail(logPath))
			return waitErr
		default:
		}
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		// Children that outlived the leader (none should) go too.
		syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := cfg.Dial(ctx, "tcp", s.Addr)
		if err == nil {
			c.Close()
			return s, stop, nil
		}
		select {
		case werr := <-exited:
			exited <- werr
			stop()
			return nil, nil, fmt.Errorf("testbed: %s exited at start: %v; %s", cfg.Kind, werr, tail(logPath))
		case <-ctx.Done():
			stop()
			return nil, nil, fmt.Errorf("testbed: %s did not listen on %s within 10 s: %w; %s", cfg.Kind, s.Addr, err, tail(logPath))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a free port on host. Another process could
// take it before the server binds it; the server then fails to start and
// says so.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("testbed: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the end of a server's output, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	b = bytes.TrimSpace(b)
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	if len(b) == 0 {
		return "no output"
	}
	return "output: " + string(b)
}

var versionLine = map[string]*regexp.Regexp{
	"nginx":   regexp.MustCompile(`nginx/\S+`),
	"haproxy": regexp.MustCompile(`HAProxy version \S+`),
	"apache":  regexp.MustCompile(`Apache/\S+`),
	// caddy build-info's module line: "caddy version" says "unknown"
	// for a binary built with go install.
	"caddy":   regexp.MustCompile(`caddyserver/caddy/v2\s+v2\.\S+`),
	"java":    regexp.MustCompile(`openjdk version "[^"]+"`),
	"node":    regexp.MustCompile(`v\d+\.\S+`),
	"python":  regexp.MustCompile(`Python \S+`),
	"openssl": regexp.MustCompile(`OpenSSL \S+`),
}

// serverVersion asks the program for its version.
func serverVersion(kind, path string) (string, error) {
	flag := map[string]string{"nginx": "-v", "haproxy": "-v", "apache": "-v", "caddy": "build-info",
		"java": "-version", "node": "-v", "python": "--version", "openssl": "version"}[kind]
	out, err := exec.Command(path, flag).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testbed: %s %s: %w: %s", path, flag, err, out)
	}
	v := versionLine[kind].FindString(string(out))
	if v == "" {
		return "", fmt.Errorf("testbed: %s %s: no version in %q", path, flag, out)
	}
	switch kind {
	case "caddy":
		v = "Caddy " + strings.Fields(v)[1]
	case "java":
		v = "OpenJDK " + strings.Trim(strings.Fields(v)[2], `"`)
	case "node":
		v = "Node.js " + v
	}
	return strings.Replace(v, " version ", " ", 1), nil
}

// writeServerConfig writes cfg.Kind's configuration into cfg.Dir and
// returns the program's arguments and extra environment.
func writeServerConfig(cfg RealServerConfig, addr string) (args, env []string, err error) {
	write := func(name, text string) (string, error) {
		p := filepath.Join(cfg.Dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			return "", fmt.Errorf("testbed: %w", err)
		}
		return p, nil
	}
	f, dir := cfg.Files, cfg.Dir
	switch cfg.Kind {
	case "nginx":
		protocols := map[uint16]string{0: "TLSv1.2 TLSv1.3", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[cfg.Version]
		verify := ""
		if cfg.RequireCert {
			verify = fmt.Sprintf("ssl_client_certificate %s;\n\t\tssl_verify_client on;\n\t\tssl_verify_depth 1;", f.CA)
		}
		// One process, in the foreground: nothing to reap but the
		// process itself, and no user switch. With Workers, a master
		// and its workers, as root so that they can read dir.
		procs := "master_process off;"
		if cfg.Workers > 0 {
			procs = fmt.Sprintf("master_process on;\nworker_processes %d;\nuser root;", cfg.Workers)
		}
		conf := fmt.Sprintf(`daemon off;
%[7]s
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s ssl;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		ssl_protocols %[5]s;
		%[6]s
		location / { return 200 "ok\n"; }
		# Requests served, read by the overhead measurements.
		location = /status { stub_status; }
	}
}
`, dir, addr, f.ServerCert, f.ServerKey, protocols, verify, procs)
		p, err := write("nginx.conf", conf)
		return []string{"-p", dir, "-c", p, "-e", filepath.Join(dir, "error.log")}, nil, err
	case "haproxy":
		cert, err := os.ReadFile(f.ServerCert)
		if err != nil {
			return nil, nil, fmt.Errorf("testbed: %w", err)
		}
		key, err := os.ReadFile(f.ServerKey)
		if err != nil {
			return nil, nil, fmt.Errorf("testbed: %w", err)
		}
		pem, err := write("haproxy.pem", string(cert)+string(key))
		if err != nil {
			return nil, nil, err
		}
		bind := "bind " + addr + " ssl crt " + pem
		switch cfg.Version {
		case tls.VersionTLS12:
			bind += " ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2"
		case tls.VersionTLS13:
			bind += " ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3"
		}
		if cfg.RequireCert {
			bind += " verify required ca-file " + f.CA
		}
		conf := fmt.Sprintf(`global
	maxconn 256
defaults
	mode http
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend probe
	%s
	http-request return status 200 content-type text/plain string "ok"
`, bind)
		p, err := write("haproxy.cfg", conf)
		return []string{"-db", "-f", p}, nil, err
	case "apache":
		protocols := map[uint16]string{0: "-all +TLSv1.2 +TLSv1.3", tls.VersionTLS12: "-all +TLSv1.2", tls.VersionTLS13: "-all +TLSv1.3"}[cfg.Version]
		verify := ""
		if cfg.RequireCert {
			verify = fmt.Sprintf("SSLCACertificateFile %s\n\tSSLVerifyClient require\n\tSSLVerifyDepth 1", f.CA)
		}
		if err := os.MkdirAll(filepath.Join(dir, "htdocs"), 0o755); err != nil {
			return nil, nil, fmt.Errorf("testbed: %w", err)
		}
		const mods = "/usr/lib/apache2/modules"
		conf := fmt.Sprintf(`ServerRoot %[1]s
DefaultRuntimeDir %[1]s
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
LogLevel warn
ServerName localhost
User nobody
Group nogroup
LoadModule mpm_event_module %[7]s/mod_mpm_event.so
LoadModule authz_core_module %[7]s/mod_authz_core.so
LoadModule ssl_module %[7]s/mod_ssl.so
Listen %[2]s
DocumentRoot %[1]s/htdocs
<VirtualHost %[2]s>
	SSLEngine on
	SSLCertificateFile %[3]s
	SSLCertificateKeyFile %[4]s
	SSLProtocol %[5]s
	%[6]s
</VirtualHost>
`, dir, addr, f.ServerCert, f.ServerKey, protocols, verify, mods)
		p, err := write("httpd.conf", conf)
		return []string{"-d", dir, "-f", p, "-DFOREGROUND"}, nil, err
	case "caddy":
		policy := map[string]any{"certificate_selection": map[string]any{"any_tag": []string{"probe"}}}
		switch cfg.Version {
		case tls.VersionTLS12:
			policy["protocol_min"], policy["protocol_max"] = "tls1.2", "tls1.2"
		case tls.VersionTLS13:
			policy["protocol_min"], policy["protocol_max"] = "tls1.3", "tls1.3"
		}
		if cfg.RequireCert {
			policy["client_authentication"] = map[string]any{
				"ca":   map[string]any{"provider": "file", "pem_files": []string{f.CA}},
				"mode": "require_and_verify",
			}
		}
		conf := map[string]any{
			"admin":   map[string]any{"disabled": true},
			"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
			"apps": map[string]any{
				"http": map[string]any{"servers": map[string]any{"probe": map[string]any{
					"listen":                  []string{addr},
					"protocols":               []string{"h1", "h2"},
					"automatic_https":         map[string]any{"disable": true},
					"tls_connection_policies": []any{policy},
					"routes": []any{map[string]any{"handle": []any{
						map[string]any{"handler": "static_response", "body": "ok\n"}}}},
				}}},
				"tls": map[string]any{"certificates": map[string]any{"load_files": []any{map[string]any{
					"certificate": f.ServerCert, "key": f.ServerKey, "tags": []string{"probe"}}}}},
			},
		}
		b, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			return nil, nil, fmt.Errorf("testbed: %w", err)
		}
		p, err := write("caddy.json", string(b))
		// Caddy keeps its data under $HOME and $XDG_*: keep them in dir.
		return []string{"run", "--config", p}, []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}, err
	case "java", "node", "python":
		return sourceServer(cfg, addr)
	case "openssl":
		host, port, _ := net.SplitHostPort(addr)
		// -www answers a GET with a status page and any other request
		// with an error page; -rev or stdin echo would need a terminal.
		args := []string{"s_server", "-accept", net.JoinHostPort(host, port), "-www", "-quiet",
			"-cert", f.ServerCert, "-key", f.ServerKey}
		switch cfg.Version {
		case tls.VersionTLS12:
			args = append(args, "-tls1_2")
		case tls.VersionTLS13:
			args = append(args, "-tls1_3")
		}
		if cfg.RequireCert {
			args = append(args, "-CAfile", f.CA, "-Verify", "1", "-verify_return_error")
		}
		return args, nil, nil
	}
	return nil, nil, fmt.Errorf("testbed: unknown server %q", cfg.Kind)
}

// sourceServer writes the kind's embedded server into cfg.Dir (compiling
// the Java one with javac there) and returns its arguments: host, port,
// the PKI's files, the TLS versions allowed and whether a client
// certificate is required.
func sourceServer(cfg RealServerConfig, addr string) (args, env []string, err error) {
	name := map[string]string{"java": "LingerTLSServer.java", "node": "server.js", "python": "server.py"}[cfg.Kind]
	src, err := serverSources.ReadFile("servers/" + name)
	if err != nil {
		return nil, nil, fmt.Errorf("testbed: %w", err)
	}
	p := filepath.Join(cfg.Dir, name)
	if err := os.WriteFile(p, src, 0o600); err != nil {
		return nil, nil, fmt.Errorf("testbed: %w", err)
	}
	host, port, _ := net.SplitHostPort(addr)
	f := cfg.Files
	need := strconv.FormatBool(cfg.RequireCert)
	// Each platform names the versions its own way.
	names := map[string][2]string{"java": {"TLSv1.2", "TLSv1.3"}, "node": {"TLSv1.2", "TLSv1.3"}, "python": {"TLSv1_2", "TLSv1_3"}}[cfg.Kind]
	lo, hi := names[0], names[1]
	switch cfg.Version {
	case tls.VersionTLS12:
		hi = lo
	case tls.VersionTLS13:
		lo = hi
	}
	switch cfg.Kind {
	case "java":
		out, err := exec.Command("javac", "-d", cfg.Dir, p).CombinedOutput()
		if err != nil {
			return nil, nil, fmt.Errorf("testbed: javac %s: %w: %s", p, err, out)
		}
		protocols := lo
		if hi != lo {
			protocols += "," + hi
		}
		return []string{"-cp", cfg.Dir, "LingerTLSServer", host, port, f.ServerCert, f.ServerKey, f.CA, protocols, need}, nil, nil
	case "python":
		// -u: the "listening" line and tracebacks reach the log at once.
		return []string{"-u", p, host, port, f.ServerCert, f.ServerKey, f.CA, lo, hi, need}, nil, nil
	}
	return []string{p, host, port, f.ServerCert, f.ServerKey, f.CA, lo, hi, need}, nil, nil
}

// PinCPU moves every thread of process pid onto one CPU. The overhead
// measurements pin the server to one CPU and the load generator to
// another (see PinForLoad): on a two-CPU machine the scheduler otherwise
// moves both, and a thread that wakes (a watcher's reader, liblinger's
// loop) lands on whichever it likes, which spreads runs of the same arm
// more widely than the difference measured. A thread the process starts
// later inherits the affinity of the thread that starts it.
func PinCPU(pid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("testbed: pinning process %d: %w", pid, err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("testbed: pinning thread %d of process %d to CPU %d: %w", tid, pid, cpu, err)
		}
	}
	return nil
}

// PinForLoad pins processes pids, servers, to one CPU this process may run
// on (PinCPU) and returns another for the load generator (Taskset), or -1,
// having said so in the log, when there are fewer than two and the
// measurement runs unpinned.
func PinForLoad(t testing.TB, pids ...int) (client int) {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatalf("testbed: %v", os.NewSyscallError("sched_getaffinity", err))
	}
	var cpus []int
	for cpu := 0; cpu < len(set)*64 && len(cpus) < 2; cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	if len(cpus) < 2 {
		t.Logf("this process may run on %d CPU: the server and the load generator are not pinned apart", len(cpus))
		return -1
	}
	for _, pid := range pids {
		if err := PinCPU(pid, cpus[0]); err != nil {
			t.Fatal(err)
		}
	}
	return cpus[1]
}

// Taskset returns the command line that runs name with args on cpu alone
// (taskset, of util-linux), or as it is when cpu is negative.
func Taskset(cpu int, name string, args ...string) []string {
	if cpu < 0 {
		return append([]string{name}, args...)
	}
	return append([]string{"taskset", "-c", strconv.Itoa(cpu), name}, args...)
}

// NginxRequests returns how many requests the nginx at addr has served
// since it started, from its stub_status page (/status, HTTPS), read
// through client. The read is a request too, and counts.
func NginxRequests(client *http.Client, addr string) (uint64, error) {
	resp, err := client.Get("https://" + addr + "/status")
	if err != nil {
		return 0, fmt.Errorf("testbed: nginx's status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("testbed: nginx's status: %w", err)
	}
	// "Active connections: 1 \nserver accepts handled requests\n 5 5 9 \n..."
	m := stubRequests.FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		return 0, fmt.Errorf("testbed: nginx's status: %s: %q", resp.Status, body)
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

var stubRequests = regexp.MustCompile(`server accepts handled requests\s+\d+\s+\d+\s+(\d+)`)

// A Thread is one thread of a process, as /proc tells it.
type Thread struct {
	PID, TID int
	// CPU is the time it has spent running (schedstat: nanoseconds from
	// the scheduler's clock). Unlike a run's requests a second, it leaves
	// out the time the virtual machine's host took the CPU away (steal),
	// so the CPU a request costs varies less from run to run than its
	// rate; a thread that ended is not listed, so compare readings of
	// threads that live across them.
	CPU time.Duration
	// Voluntary counts the times it gave the CPU up to wait (one a
	// wake-up), Involuntary the times it was preempted.
	Voluntary, Involuntary int64
}

// Threads lists the threads of process pid and of its descendants; a
// thread that ends while they are read is left out.
func Threads(pid int) ([]Thread, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("testbed: threads of process %d: %w", pid, err)
	}
	var out []Thread
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/task/%d/", pid, tid)
		b, err := os.ReadFile(dir + "schedstat")
		if err != nil {
			continue // the thread ended meanwhile
		}
		th := Thread{PID: pid, TID: tid}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err != nil {
			return nil, fmt.Errorf("testbed: %sschedstat: %q: %w", dir, b, err)
		}
		th.CPU = time.Duration(ns)
		status, _ := os.ReadFile(dir + "status")
		for _, l := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(l, ":")
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				th.Voluntary = n
			case "nonvoluntary_ctxt_switches":
				th.Involuntary = n
			}
		}
		out = append(out, th)
		kids, _ := os.ReadFile(dir + "children")
		for _, f := range strings.Fields(string(kids)) {
			if kid, err := strconv.Atoi(f); err == nil {
				if ts, err := Threads(kid); err == nil {
					out = append(out, ts...)
				}
			}
		}
	}
	return out, nil
}
