package probe

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable returns s with every character a terminal could act on escaped
// as Go escapes it (\x1b, \u202e, \xff for a byte that is not UTF-8). The
// probe prints text the server chose, certificate names, HTTP status lines,
// error messages carrying them, and a hostile server must not be able to
// move the cursor, rewrite earlier lines or reverse the text.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// maxStatusLine bounds the status line a report keeps.
const maxStatusLine = 120

// statusLine returns the status line of the HTTP/1.x response that head
// starts with, such as "HTTP/1.1 400 Bad Request", escaped and bounded, or
// "" if head is not one.
func statusLine(head []byte) string {
	if !bytes.HasPrefix(head, []byte("HTTP/1.")) {
		return ""
	}
	line, _, _ := bytes.Cut(head, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > maxStatusLine {
		line = line[:maxStatusLine]
	}
	return printable(string(line))
}

// httpTitle returns the text of the <title> of an HTML body in head, which
// is where nginx says why it answered 400 ("The SSL certificate error"), or
// "".
func httpTitle(head []byte) string {
	_, rest, ok := bytes.Cut(head, []byte("<title>"))
	if !ok {
		return ""
	}
	title, _, ok := bytes.Cut(rest, []byte("</title>"))
	if !ok || len(title) > maxStatusLine {
		return ""
	}
	return printable(string(bytes.TrimSpace(title)))
}
