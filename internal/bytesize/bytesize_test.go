package bytesize

import (
	"flag"
	"testing"
)

var _ flag.Value = (*Flag)(nil)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1MiB": 1 << 20, "1M": 1 << 20, "1mb": 1 << 20, "1m": 1 << 20,
		"64KiB": 64 << 10, "64k": 64 << 10, "512": 512, "2 GiB": 2 << 30, "0": 0, " 7B ": 7,
	} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1TiB", "-1", "1.5M", "x", "1Ⱥ", "1ȺȺȺ", "Ⱥ1", "1\x1b[2J", "99999999999999999999", "1025GiB"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 64 << 10: "64 KiB",
		1 << 20: "1 MiB", 1<<20 + 1<<19: "1.5 MiB", 3 << 30: "3072 MiB",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFlag(t *testing.T) {
	var f Flag
	if err := f.Set("64KiB"); err != nil || f != 64<<10 || f.String() != "65536" {
		t.Errorf("Set(64KiB): %d, %q, %v", f, f.String(), err)
	}
	if err := f.Set("x"); err == nil || f != 64<<10 {
		t.Errorf("Set(x) = %v and left %d, want an error and the value unchanged", err, f)
	}
}
