package bench

import (
	"errors"
	"fmt"
	"time"
)

// ErrUsage matches, with errors.Is, the errors Main returns for a bad
// command line. Main returns ErrUsage itself when the flag package has
// already printed the problem.
var ErrUsage = errors.New("bad command line")

// usageErr says what is wrong with the command line.
type usageErr struct{ msg string }

func (e usageErr) Error() string        { return e.msg }
func (e usageErr) Is(target error) bool { return target == ErrUsage }

func usageError(format string, args ...any) error {
	return usageErr{fmt.Sprintf(format, args...)}
}

// intFlag is an integer flag's value and the least value it takes.
type intFlag struct {
	name     string
	v, least int
}

// durFlag is a duration flag's value; zero is allowed only if zeroOK.
type durFlag struct {
	name   string
	v      time.Duration
	zeroOK bool
}

// checkFlags names the first flag whose value is out of range. A bad value
// must be blamed on the flag that carries it, not on what it breaks later
// (a negative -n used to fail as a negative linger.Config.MaxConns in a
// child process).
func checkFlags(ints []intFlag, durs []durFlag) error {
	for _, f := range ints {
		if f.v < f.least {
			return usageError("-%s %d: must be at least %d", f.name, f.v, f.least)
		}
	}
	for _, f := range durs {
		if f.v < 0 || f.v == 0 && !f.zeroOK {
			return usageError("-%s %v: must be positive", f.name, f.v)
		}
	}
	return nil
}
