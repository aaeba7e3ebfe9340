//go:build !linux

package linger

// checkShards has nothing to check where there is no event loop.
func (d *admissionDriver) checkShards(string) {}
