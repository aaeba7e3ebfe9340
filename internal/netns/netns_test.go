package netns

import (
	"math"
	"testing"
	"time"
)

func TestPathConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg PathConfig
		ok  bool
	}{
		{PathConfig{}, true},
		{PathConfig{Delay: 20 * time.Millisecond, Loss: 0.05}, true},
		{PathConfig{Loss: 1}, true},
		{PathConfig{Delay: -1}, false},
		{PathConfig{Loss: -0.1}, false},
		{PathConfig{Loss: 1.5}, false},
		{PathConfig{Loss: math.NaN()}, false},
	} {
		if err := c.cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%+v: validate() = %v", c.cfg, err)
		}
	}
	if s := (PathConfig{Delay: 20 * time.Millisecond, Loss: 0.05}).String(); s != "20ms each way, 5% loss" {
		t.Errorf("String() = %q", s)
	}
}

func TestCountersSub(t *testing.T) {
	old := Counters{OutRsts: 3, AbortOnClose: 1, All: map[string]uint64{"TcpOutRsts": 3, "TcpExtTCPAbortOnClose": 1}}
	now := Counters{OutRsts: 5, AbortOnClose: 1, All: map[string]uint64{"TcpOutRsts": 5, "TcpExtTCPAbortOnClose": 1, "UdpInDatagrams": 7}}
	d := now.Sub(old)
	if d.OutRsts != 2 || d.AbortOnClose != 0 || d.All["TcpOutRsts"] != 2 || d.All["UdpInDatagrams"] != 7 {
		t.Errorf("Sub = %+v", d)
	}
}
