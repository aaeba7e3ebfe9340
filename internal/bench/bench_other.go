//go:build !linux

package bench

import (
	"context"
	"errors"
)

// Main runs "linger bench"; the benchmarks need Linux (/proc, epoll, the
// event loop they measure).
func Main(ctx context.Context, self, args []string) error {
	return errors.New("linger bench runs on Linux only")
}
