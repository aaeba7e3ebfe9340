package main

import (
	"context"
	"errors"
	"os"

	"github.com/linger-go/linger/internal/bench"
)

// runBench runs "linger bench"; the work is in internal/bench. The
// benchmarks re-run this executable as "linger bench <hidden subcommand>"
// for the peers and clients that must live in other processes.
func runBench(ctx context.Context, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	err = bench.Main(ctx, []string{exe, "bench"}, args)
	switch {
	case err == bench.ErrUsage:
		return exitError(2) // the flag package has printed the problem
	case errors.Is(err, bench.ErrUsage):
		return usageErr("bench", err)
	}
	return err
}
