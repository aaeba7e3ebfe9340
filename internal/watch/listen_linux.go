package watch

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Listening returns the local TCP ports some socket listens on, IPv4 or
// IPv6, in the calling thread's network namespace, from /proc/net/tcp and
// tcp6 (state 0A is LISTEN). Those files list every socket, so on a busy
// host reading them costs a few milliseconds: the command reads them once
// an interval, not per packet.
func Listening() (map[uint16]bool, error) {
	ports := map[uint16]bool{}
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open("/proc/thread-self/net/" + name)
		if os.IsNotExist(err) && name == "tcp6" {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// "sl local_address rem_address st ...": local_address is
			// ADDR:PORT in hex.
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			if p, err := strconv.ParseUint(fields[1][i+1:], 16, 16); err == nil && i >= 0 {
				ports[uint16(p)] = true
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("watch: /proc/net/%s: %w", name, err)
		}
	}
	return ports, nil
}
