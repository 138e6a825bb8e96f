// Command go-host calls the plugin the way spire-server does: grpc-go over the plugin's unix
// socket, with hashicorp/go-plugin's dial options (insecure transport, unlimited message size).
// examples/bench.rs runs it next to its own grpcio client, so the figures show what the Go
// host that ships in production sees. Requests arrive already encoded (hex protobuf), so no
// generated code is needed: a pass-through codec sends the bytes as they are.
//
//	go-host -socket /tmp/plugin123/plugin.sock -method /pkg.Svc/Method -req 0a03... -n 3000 -callers 1
//
// Prints one JSON object: wall time and every call's latency in nanoseconds.
//
//	go-host -serve /tmp/echo.sock -reply 0a03...
//
// serves every method with the same reply (a grpc-go server with nothing to do): the round trip
// any gRPC plugin costs on this machine, measured in the benchmark's own run.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec passes already-encoded protobuf messages through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: unexpected %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: unexpected %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

type result struct {
	WallNs    int64   `json:"wall_ns"`
	LatencyNs []int64 `json:"latency_ns"`
}

func main() {
	socket := flag.String("socket", "", "the plugin's unix socket")
	method := flag.String("method", "", "full gRPC method name")
	reqHex := flag.String("req", "", "the request, protobuf bytes in hex")
	n := flag.Int("n", 1000, "calls per caller")
	callers := flag.Int("callers", 1, "concurrent callers on the one connection")
	warmup := flag.Int("warmup", 100, "calls before measuring")
	spread := flag.Duration("spread", 0, "caller i starts i*spread/callers after the first")
	serve := flag.String("serve", "", "serve an echo server on this unix socket instead")
	reply := flag.String("reply", "", "the echo server's reply, protobuf bytes in hex")
	flag.Parse()
	if *serve != "" {
		echo(*serve, *reply)
		return
	}
	if *socket == "" || *method == "" {
		fail(fmt.Errorf("-socket and -method are required"))
	}
	req, err := hex.DecodeString(*reqHex)
	if err != nil {
		fail(err)
	}

	conn, err := grpc.NewClient("passthrough:///plugin",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(math.MaxInt32),
			grpc.MaxCallSendMsgSize(math.MaxInt32),
			grpc.ForceCodec(rawCodec{}),
		),
	)
	if err != nil {
		fail(err)
	}
	defer conn.Close()

	call := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		in := req
		var out []byte
		if err := conn.Invoke(ctx, *method, &in, &out); err != nil {
			fail(err)
		}
	}
	for i := 0; i < *warmup; i++ {
		call()
	}

	lat := make([][]int64, *callers)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			time.Sleep(*spread * time.Duration(c) / time.Duration(*callers))
			mine := make([]int64, 0, *n)
			for i := 0; i < *n; i++ {
				t := time.Now()
				call()
				mine = append(mine, time.Since(t).Nanoseconds())
			}
			lat[c] = mine
		}(c)
	}
	wg.Wait()
	res := result{WallNs: time.Since(start).Nanoseconds()}
	for _, l := range lat {
		res.LatencyNs = append(res.LatencyNs, l...)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fail(err)
	}
}

// echo answers every call with the same bytes until stdin closes (the benchmark exits).
func echo(socket, replyHex string) {
	out, err := hex.DecodeString(replyHex)
	if err != nil {
		fail(err)
	}
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		fail(err)
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var in []byte
			if err := stream.RecvMsg(&in); err != nil {
				return err
			}
			reply := out
			return stream.SendMsg(&reply)
		}))
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		s.Stop()
	}()
	fmt.Println("ready")
	if err := s.Serve(l); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go-host:", err)
	os.Exit(1)
}
