package linger

import "golang.org/x/sys/unix"

// clampRcvBuf shrinks fd's receive buffer to n bytes, so that a peer that
// keeps sending while lingering is under pressure pushes at most about
// that much per window update instead of what autotuning grew the buffer
// to (up to net.ipv4.tcp_rmem's maximum, 32 MiB on some machines). On
// loopback that matters twice: each window update our reads send makes the
// peer transmit in our own softirq, so its bytes cost our CPU, and the
// bytes still queued when the budget ends the connection were received for
// nothing.
//
// What Linux does with it (net/core/sock.c, net/ipv4/tcp_output.c): the
// buffer becomes 2n (room for the kernel's bookkeeping), and setting it
// marks the socket SOCK_RCVBUF_LOCK, which turns receive-buffer autotuning
// (tcp_rcv_space_adjust) off for this socket for good. A window already
// advertised is not withdrawn: with net.ipv4.tcp_shrink_window at its
// default 0, TCP never moves the window's right edge back, so the peer may
// still send what it was offered; later acknowledgements offer only the
// room the smaller buffer has, so the window closes as that data arrives.
// Data beyond the buffer is collapsed or dropped (TcpExtTCPRcvQDrop) and
// retransmitted by the peer once our reads make room. Nothing is lost for a
// peer that cooperates, it only goes slower, which under pressure is the
// point.
//
// An error (the socket already reset, say) changes nothing: the byte
// budget still bounds what the connection costs.
func clampRcvBuf(fd, n int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
}
