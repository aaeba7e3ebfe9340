//go:build linux

package netns

import "testing"

func TestParseProcNet(t *testing.T) {
	in := "TcpExt: SyncookiesSent TCPAbortOnClose\nTcpExt: 0 4\nTcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 9\n"
	m := map[string]uint64{}
	if err := parseProcNet([]byte(in), m); err != nil {
		t.Fatal(err)
	}
	if m["TcpExtTCPAbortOnClose"] != 4 || m["TcpOutRsts"] != 9 || m["TcpMaxConn"] != ^uint64(0) || len(m) != 5 {
		t.Errorf("parsed %v", m)
	}
	if err := parseProcNet([]byte("Tcp: A B\nTcp: 1\n"), m); err == nil {
		t.Error("mismatched lines parsed")
	}
}

func TestStalePID(t *testing.T) {
	for name, want := range map[string]int{"lg-123-4-s": 123, "lg-9-1-c": 9, "lgx-1-1": 0, "lg-abc-1": 0, "other": 0, "lg-0-1-s": 0} {
		if pid, ok := stalePID(name); pid != want || ok != (want != 0) {
			t.Errorf("stalePID(%q) = %d, %v", name, pid, ok)
		}
	}
}
