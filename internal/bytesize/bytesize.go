// Package bytesize reads and writes byte counts as people do: 1048576, 1MiB,
// 1M and 64k on a command line, "1 MiB" and "1.5 KiB" in a report. The
// units are powers of 1024.
package bytesize

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Max bounds a size: far above any sensible upload or buffer, far below
// overflow.
const Max = 1 << 40

// Parse reads a byte count given as a whole number optionally followed by a
// unit: B, K, KB, KiB, M, MB, MiB, G, GB or GiB (case does not matter, a
// space may precede the unit, all are powers of 1024). It rejects negative
// and fractional numbers and anything above Max.
func Parse(v string) (int64, error) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && '0' <= v[i] && v[i] <= '9' {
		i++
	}
	num, unit := v[:i], strings.TrimSpace(v[i:])
	if num == "" {
		return 0, errors.New("not a size: want a whole number of bytes, optionally with a unit (KiB, MiB, GiB)")
	}
	mult := int64(0)
	for _, u := range []struct {
		names []string
		mult  int64
	}{
		{[]string{"", "b"}, 1},
		{[]string{"k", "kb", "kib"}, 1 << 10},
		{[]string{"m", "mb", "mib"}, 1 << 20},
		{[]string{"g", "gb", "gib"}, 1 << 30},
	} {
		for _, name := range u.names {
			if strings.EqualFold(unit, name) {
				mult = u.mult
			}
		}
	}
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q: want B, KiB, MiB or GiB", unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > Max/mult {
		return 0, errors.New("too large: at most 1 TiB")
	}
	return n * mult, nil
}

// Format writes n in the largest unit it reaches: a whole number of MiB or
// KiB when it is one, one decimal otherwise, bytes below 1 KiB.
func Format(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Flag is a flag.Value for a byte count, read by Parse.
type Flag int64

// String returns the count in bytes.
func (s *Flag) String() string { return strconv.FormatInt(int64(*s), 10) }

// Set reads v with Parse.
func (s *Flag) Set(v string) error {
	n, err := Parse(v)
	if err != nil {
		return err
	}
	*s = Flag(n)
	return nil
}
