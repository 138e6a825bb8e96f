// Side-by-side benchmark: SPIRE's built-in azure_key_vault KeyManager (loaded in-process, as
// spire-server loads a built-in) and this repository's plugin binary (loaded as a `plugin_cmd`
// external plugin), both through SPIRE's catalog.Load and called through the same
// keymanager.V1 facade spire-server uses, against the same fake Key Vault.
//
// The fake is examples/fake_key_vault.rs, run as a child process and steered over its stdin
// (latency, sign throttling, request counts). Microsoft's Go SDK only sends its token to
// `https://<name>.vault.azure.net`, so both plugins address the vault as
// https://azkv-fake.vault.azure.net/ and reach it through the CONNECT proxy in proxy.go
// (HTTPS_PROXY), trusting the fake's CA (SSL_CERT_FILE) and taking tokens from its App Service
// managed-identity endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER). The plugin process inherits
// this environment from go-plugin.
//
// Rounds alternate between the two plugins within one run. Every scenario also measures the
// fake answering the same requests directly (direct.go), to show the fake is not the limit.
//
// Run through scripts/bench.sh, which builds the release plugin and the fake first.
package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/sirupsen/logrus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	metricsv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/common/metrics/v1"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	identityproviderv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/identityprovider/v1"
	"github.com/spiffe/spire/pkg/common/catalog"
	"github.com/spiffe/spire/pkg/common/hostservice/metricsservice"
	"github.com/spiffe/spire/pkg/common/telemetry"
	"github.com/spiffe/spire/pkg/server/hostservice/agentstore"
	"github.com/spiffe/spire/pkg/server/hostservice/identityprovider"
	"github.com/spiffe/spire/pkg/server/plugin/keymanager"
	"github.com/spiffe/spire/pkg/server/plugin/keymanager/azurekeyvault"
)

const (
	pluginName  = "azure_key_vault"
	pluginType  = "KeyManager"
	trustDomain = "example.org"
	// The public name the built-in insists on; proxy.go maps it to the fake.
	vaultHost = "azkv-fake.vault.azure.net"
	signKeyID = "bench-sign"
)

type subject struct {
	name string
	km   keymanager.KeyManager
	cat  *catalog.Catalog
	key  keymanager.Key
}

func main() {
	pluginBin := flag.String("plugin", "", "this repository's plugin binary (release build)")
	fakeBin := flag.String("fake", "", "examples/fake_key_vault binary")
	quick := flag.Bool("quick", false, "few calls and one round per plugin: a smoke run")
	only := flag.String("only", "", "comma-separated scenarios: sign,concurrent,getkey,configure,throttle,throttle2")
	flag.Parse()
	if *pluginBin == "" || *fakeBin == "" {
		fail(errors.New("-plugin and -fake are required"))
	}
	scale := 1
	rounds := 3
	if *quick {
		scale, rounds = 10, 1
	}

	fake, err := startFake(*fakeBin)
	if err != nil {
		fail(err)
	}
	defer fake.stop()
	proxy, err := startProxy(vaultHost+":443", fake.httpsAddr)
	if err != nil {
		fail(err)
	}
	// Before anything in this process builds an HTTP client: Go reads these once.
	for k, v := range map[string]string{
		"HTTPS_PROXY":       proxy.url(),
		"SSL_CERT_FILE":     fake.caFile,
		"IDENTITY_ENDPOINT": fake.identityEndpoint,
		"IDENTITY_HEADER":   fake.identityHeader,
	} {
		if err := os.Setenv(k, v); err != nil {
			fail(err)
		}
	}

	ctx := context.Background()
	builtin, err := load(ctx, "built-in", "", "")
	if err != nil {
		fail(fmt.Errorf("loading the built-in: %w", err))
	}
	defer builtin.cat.Close()
	sum, err := fileSHA256(*pluginBin)
	if err != nil {
		fail(err)
	}
	ours, err := load(ctx, "this plugin", *pluginBin, sum)
	if err != nil {
		fail(fmt.Errorf("loading the plugin: %w", err))
	}
	defer ours.cat.Close()
	subjects := []*subject{builtin, ours}
	for _, s := range subjects {
		if s.key, err = s.km.GenerateKey(ctx, signKeyID, keymanager.ECP256); err != nil {
			fail(fmt.Errorf("%s: GenerateKey: %w", s.name, err))
		}
	}
	direct, err := newDirect(fake, vaultHost)
	if err != nil {
		fail(fmt.Errorf("direct client: %w", err))
	}
	if proxy.refused.Load() != 0 {
		fail(fmt.Errorf("the proxy refused %d CONNECTs to hosts other than %s", proxy.refused.Load(), vaultHost))
	}

	want := func(name string) bool {
		if *only == "" {
			return true
		}
		for _, s := range strings.Split(*only, ",") {
			if strings.TrimSpace(s) == name {
				return true
			}
		}
		return false
	}
	t := &table{}
	fmt.Fprintf(os.Stderr, "go-bench: %d round(s) per plugin per scenario, alternating built-in / this plugin\n", rounds)
	if want("sign") {
		for _, ms := range []int{0, 5} {
			signSequential(t, fake, direct, subjects, ms, 3000/scale, rounds)
		}
	}
	if want("concurrent") {
		signConcurrent(t, fake, direct, subjects, 20, 32, 60/min(scale, 6), rounds)
	}
	if want("getkey") {
		getKeyCached(t, fake, subjects, 20000/scale, rounds)
	}
	if want("configure") {
		configure(t, fake, subjects, *pluginBin, sum, 10, 2000, 100, rounds)
	}
	// Each throttled scenario is a vault with its own limit: this plugin is loaded afresh for
	// it, so it does not start from the limit it learned in the previous one.
	fresh := func() []*subject {
		s, err := load(ctx, "this plugin", *pluginBin, sum)
		if err != nil {
			fail(fmt.Errorf("loading the plugin: %w", err))
		}
		if s.key, err = s.km.GenerateKey(ctx, signKeyID, keymanager.ECP256); err != nil {
			fail(fmt.Errorf("%s: GenerateKey: %w", s.name, err))
		}
		return []*subject{builtin, s}
	}
	if want("throttle") {
		s := fresh()
		throttledBurst(t, fake, direct, s, 100, 20, 600/min(scale, 3), 32, rounds)
		s[1].cat.Close()
	}
	if want("throttle2") {
		s := fresh()
		throttledBurst(t, fake, direct, s, 1000, 20, 3000/scale, 64, rounds)
		s[1].cat.Close()
	}
	if err := fake.command("latency 0"); err != nil {
		fail(err)
	}
	t.print(os.Stdout)
	fmt.Printf("\n%d rounds per scenario, alternating built-in / this plugin; p50 and p99 pool all rounds. "+
		"The throttled vault answers 429 with Retry-After: 1 once its token bucket is empty; the floor is "+
		"(signatures − burst) / limit. \"The fake directly\": the same sign request sent by this process "+
		"through the same proxy over kept-alive connections.\n", rounds)
	fmt.Printf("The proxy tunnelled %d connections to %s and refused %d to other hosts.\n",
		proxy.tunnels.Load(), vaultHost, proxy.refused.Load())
	if proxy.refused.Load() != 0 {
		// A plugin reached past the fake (e.g. a public Entra endpoint): the rows are not
		// a like-for-like comparison.
		fail(errors.New("the proxy refused CONNECTs to hosts other than the fake vault"))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "go-bench: %v\n", err)
	os.Exit(1)
}

// load starts one KeyManager through catalog.Load, as spire-server does: `bin` empty loads
// the built-in (the repository offers SPIRE's azurekeyvault.BuiltIn()), otherwise the binary
// as a `plugin_cmd` plugin.
func load(ctx context.Context, name, bin, checksum string) (*subject, error) {
	idBytes := make([]byte, 8)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, err
	}
	return loadWithID(ctx, name, bin, checksum, "bench-"+hex.EncodeToString(idBytes))
}

func loadWithID(ctx context.Context, name, bin, checksum, serverID string) (*subject, error) {
	external := ""
	if bin != "" {
		external = fmt.Sprintf("plugin_cmd = %q\n\t\tplugin_checksum = %q\n", bin, checksum)
	}
	serverConfig := fmt.Sprintf(`plugins {
	%s %q {
		%s
		plugin_data {
			key_vault_uri = %q
			key_identifier_value = %q
		}
	}
}
`, pluginType, pluginName, external, "https://"+vaultHost+"/", serverID)
	var parsed struct {
		Plugins ast.Node `hcl:"plugins"`
	}
	if err := hcl.Decode(&parsed, serverConfig); err != nil {
		return nil, err
	}
	pluginConfigs, err := catalog.PluginConfigsFromHCLNode(parsed.Plugins)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	// Warnings (each retried 429) would drown the table; failures are counted instead.
	log.SetLevel(logrus.ErrorLevel)
	// GO_BENCH_LOG_LEVEL=warn shows this plugin's own warnings (when it pauses and at which
	// rate it paces after a 429), to see what happened in a throttled run.
	if lvl, err := logrus.ParseLevel(os.Getenv("GO_BENCH_LOG_LEVEL")); err == nil && bin != "" {
		log.SetLevel(lvl)
	}
	repo := &keyManagerRepository{builtin: bin == ""}
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	cat, err := catalog.Load(ctx, catalog.Config{
		Log:           log,
		CoreConfig:    catalog.CoreConfig{TrustDomain: td},
		PluginConfigs: pluginConfigs,
		HostServices: []pluginsdk.ServiceServer{
			identityproviderv1.IdentityProviderServiceServer(identityprovider.New(identityprovider.Config{TrustDomain: td}).V1()),
			agentstorev1.AgentStoreServiceServer(agentstore.New().V1()),
			metricsv1.MetricsServiceServer(metricsservice.V1(telemetry.Blackhole{})),
		},
	}, repo)
	if err != nil {
		return nil, err
	}
	if repo.KeyManager == nil {
		cat.Close()
		return nil, errors.New("no KeyManager bound")
	}
	return &subject{name: name, km: repo.KeyManager, cat: cat}, nil
}

// keyManagerRepository binds one KeyManager as spire-server's catalog does for the KeyManager
// type, offering SPIRE's built-in azure_key_vault only when asked to load the built-in.
type keyManagerRepository struct {
	keymanager.Repository
	builtin bool
}

func (r *keyManagerRepository) Plugins() map[string]catalog.PluginRepo {
	return map[string]catalog.PluginRepo{pluginType: r}
}
func (r *keyManagerRepository) Services() []catalog.ServiceRepo  { return nil }
func (r *keyManagerRepository) Binder() any                      { return r.SetKeyManager }
func (r *keyManagerRepository) Constraints() catalog.Constraints { return catalog.ExactlyOne() }
func (r *keyManagerRepository) Versions() []catalog.Version      { return []catalog.Version{keyManagerV1{}} }
func (r *keyManagerRepository) BuiltIns() []catalog.BuiltIn {
	if r.builtin {
		return []catalog.BuiltIn{azurekeyvault.BuiltIn()}
	}
	return nil
}

type keyManagerV1 struct{}

func (keyManagerV1) New() catalog.Facade { return new(keymanager.V1) }
func (keyManagerV1) Deprecated() bool    { return false }

func fileSHA256(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// ---------------------------------------------------------------------------------------
// The fake Key Vault process

type fakeVault struct {
	cmd              *exec.Cmd
	stdin            io.WriteCloser
	out              *bufio.Scanner
	mu               sync.Mutex
	httpsAddr        string
	caFile           string
	identityEndpoint string
	identityHeader   string
}

func startFake(bin string) (*fakeVault, error) {
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	f := &fakeVault{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	vars := map[string]string{}
	for f.identityHeader == "" && f.out.Scan() {
		k, v, ok := strings.Cut(f.out.Text(), "=")
		if !ok {
			continue
		}
		vars[k] = v
		if k == "IDENTITY_HEADER" {
			f.identityHeader = v
		}
	}
	if f.identityHeader == "" {
		f.stop()
		return nil, errors.New("the fake exited before printing its endpoints")
	}
	f.caFile = vars["VAULT_CA_FILE"]
	f.identityEndpoint = vars["IDENTITY_ENDPOINT"]
	uri := strings.TrimSuffix(strings.TrimPrefix(vars["VAULT_URI"], "https://"), "/")
	f.httpsAddr = uri
	if f.caFile == "" || f.identityEndpoint == "" || uri == "" {
		f.stop()
		return nil, fmt.Errorf("the fake printed incomplete endpoints: %v", vars)
	}
	return f, nil
}

// command sends one control line and returns the fake's answer after "ok".
func (f *fakeVault) query(line string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := fmt.Fprintln(f.stdin, line); err != nil {
		return "", err
	}
	if !f.out.Scan() {
		return "", fmt.Errorf("fake: no answer to %q", line)
	}
	reply := f.out.Text()
	rest, ok := strings.CutPrefix(reply, "ok")
	if !ok {
		return "", fmt.Errorf("fake: %q answered %q", line, reply)
	}
	return strings.TrimSpace(rest), nil
}

func (f *fakeVault) command(line string) error {
	_, err := f.query(line)
	return err
}

type fakeStats struct{ signs, throttled, requests, connections int64 }

func (f *fakeVault) stats() (fakeStats, error) {
	var s fakeStats
	reply, err := f.query("stats")
	if err != nil {
		return s, err
	}
	_, err = fmt.Sscanf(reply, "signs=%d throttled=%d requests=%d connections=%d", &s.signs, &s.throttled, &s.requests, &s.connections)
	if err == nil {
		// The request log is kept for these counts only; emptying it keeps the fake's memory
		// and lock hold times flat over the run.
		err = f.command("reset")
	}
	return s, err
}

func (f *fakeVault) stop() {
	_ = f.stdin.Close()
	if f.cmd.Process != nil {
		_ = f.cmd.Process.Signal(os.Interrupt)
	}
	_ = f.cmd.Wait()
}

// ---------------------------------------------------------------------------------------
// Measurement helpers

type sample struct {
	durs   []time.Duration
	failed int
	wall   time.Duration
}

func (s *sample) add(o sample) {
	s.durs = append(s.durs, o.durs...)
	s.failed += o.failed
	s.wall += o.wall
}

func percentile(durs []time.Duration, p float64) time.Duration {
	if len(durs) == 0 {
		return 0
	}
	c := append([]time.Duration(nil), durs...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(p*float64(len(c))+0.5) - 1
	return c[max(0, min(i, len(c)-1))]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	c := append([]float64(nil), xs...)
	sort.Float64s(c)
	return c[len(c)/2]
}

// run calls `op` `total` times from `callers` goroutines sharing one counter.
func run(callers, total int, op func() error) sample {
	var next atomic.Int64
	var reported atomic.Bool
	var mu sync.Mutex
	out := sample{}
	var wg sync.WaitGroup
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var durs []time.Duration
			failed := 0
			for next.Add(1) <= int64(total) {
				t0 := time.Now()
				if err := op(); err != nil {
					failed++
					// One line for the run: the failures are counted in the table.
					if reported.CompareAndSwap(false, true) {
						first, _, _ := strings.Cut(err.Error(), "\n")
						fmt.Fprintf(os.Stderr, "go-bench: first failed call of this run: %s\n", first)
					}
					continue
				}
				durs = append(durs, time.Since(t0))
			}
			mu.Lock()
			out.durs = append(out.durs, durs...)
			out.failed += failed
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.wall = time.Since(start)
	return out
}

func signOp(k keymanager.Key) func() error {
	digest := sha256.Sum256([]byte("go-bench"))
	return func() error {
		_, err := k.Sign(nil, digest[:], crypto.SHA256)
		return err
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

func ratio(ours, builtin float64) string {
	if builtin == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", ours/builtin)
}
