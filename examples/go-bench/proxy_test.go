package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// The proxy tunnels only the mapped host and counts every other CONNECT, which is what lets
// the run refuse a comparison in which a plugin reached past the fake.
func TestProxyTunnelsOnlyTheMappedHost(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p, err := startProxy("vault.example:443", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	connect := func(target string) (int, net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, c, br
	}

	status, c, br := connect("VAULT.example:443")
	if status != 200 {
		t.Fatalf("mapped host: status %d", status)
	}
	fmt.Fprint(c, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("tunnel echoed %q, %v", line, err)
	}
	c.Close()

	for _, target := range []string{"login.microsoftonline.com:443", "vault.example:80"} {
		status, c, _ := connect(target)
		c.Close()
		if status != 403 {
			t.Fatalf("%s: status %d, want 403", target, status)
		}
	}
	if got := p.refused.Load(); got != 2 {
		t.Fatalf("refused = %d, want 2", got)
	}
	if got := p.tunnels.Load(); got != 1 {
		t.Fatalf("tunnels = %d, want 1", got)
	}
}
