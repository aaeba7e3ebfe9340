// Command caddy is Caddy with its standard modules and linger's listener
// wrapper: the program that "xcaddy build --with
// github.com/linger-go/linger/caddy" generates. The module's tests build it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/linger-go/linger/caddy"
)

func main() {
	caddycmd.Main()
}
