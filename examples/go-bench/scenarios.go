package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"
)

type row struct {
	scenario, builtin, ours, ratio, fake string
}

type table struct{ rows []row }

func (t *table) add(scenario, builtin, ours, ratio, fake string) {
	t.rows = append(t.rows, row{scenario, builtin, ours, ratio, fake})
}

func (t *table) print(w io.Writer) {
	fmt.Fprintln(w, "| scenario | built-in | this plugin | this plugin / built-in | the fake directly |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.scenario, r.builtin, r.ours, r.ratio, r.fake)
	}
}

func must(err error) {
	if err != nil {
		fail(err)
	}
}

// setVault sets the fake's latency and sign limit (`limit 0 0`: none) for a scenario.
func setVault(f *fakeVault, latencyMs int, rate, burst int) {
	must(f.command(fmt.Sprintf("latency %d", latencyMs)))
	must(f.command(fmt.Sprintf("limit %d %d", rate, burst)))
	_, err := f.stats()
	must(err)
}

// alternate runs `measure` for each plugin in turn, `rounds` times: built-in, this plugin,
// built-in, ... so drift in the machine's load falls on both.
func alternate(subjects []*subject, rounds int, measure func(s *subject) sample) map[*subject][]sample {
	out := map[*subject][]sample{}
	for range rounds {
		for _, s := range subjects {
			out[s] = append(out[s], measure(s))
		}
	}
	return out
}

func pooled(samples []sample) sample {
	var all sample
	for _, s := range samples {
		all.add(s)
	}
	return all
}

func failures(name string, s sample) {
	if s.failed > 0 {
		fmt.Fprintf(os.Stderr, "go-bench: %s: %d calls failed\n", name, s.failed)
	}
}

// 1. One caller, SignData after SignData.
func signSequential(t *table, f *fakeVault, d *directClient, subjects []*subject, latencyMs, n, rounds int) {
	setVault(f, latencyMs, 0, 0)
	for _, s := range subjects {
		run(1, 20, signOp(s.key)) // warm connections and tokens
	}
	run(1, 20, d.sign)
	res := alternate(subjects, rounds, func(s *subject) sample { return run(1, n, signOp(s.key)) })
	var direct []sample
	for range rounds {
		direct = append(direct, run(1, n, d.sign))
	}
	b, o, dd := pooled(res[subjects[0]]), pooled(res[subjects[1]]), pooled(direct)
	failures("built-in", b)
	failures("this plugin", o)
	label := fmt.Sprintf("SignData, 1 caller, %d ms vault latency (%d calls per round)", latencyMs, n)
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		bq, oq := percentile(b.durs, p.q), percentile(o.durs, p.q)
		t.add(label+": "+p.name, ms(bq), ms(oq), ratio(float64(oq), float64(bq)), ms(percentile(dd.durs, p.q)))
	}
}

// 2. Many callers at once, each waiting on its signature.
func signConcurrent(t *table, f *fakeVault, d *directClient, subjects []*subject, latencyMs, callers, perCaller, rounds int) {
	setVault(f, latencyMs, 0, 0)
	total := callers * perCaller
	for _, s := range subjects {
		run(callers, callers, signOp(s.key))
	}
	run(callers, callers, d.sign)
	res := alternate(subjects, rounds, func(s *subject) sample { return run(callers, total, signOp(s.key)) })
	var direct []sample
	for range rounds {
		direct = append(direct, run(callers, total, d.sign))
	}
	rate := func(ss []sample) float64 {
		var rs []float64
		for _, s := range ss {
			rs = append(rs, float64(len(s.durs))/s.wall.Seconds())
		}
		return median(rs)
	}
	ideal := float64(callers) * 1000 / float64(latencyMs)
	br, or, dr := rate(res[subjects[0]]), rate(res[subjects[1]]), rate(direct)
	b, o, dd := pooled(res[subjects[0]]), pooled(res[subjects[1]]), pooled(direct)
	failures("built-in", b)
	failures("this plugin", o)
	label := fmt.Sprintf("SignData, %d callers, %d ms vault latency (%d calls per round)", callers, latencyMs, total)
	t.add(label+": signatures/s, median (ideal "+fmt.Sprintf("%.0f", ideal)+")", fmt.Sprintf("%.0f/s", br), fmt.Sprintf("%.0f/s", or), ratio(or, br), fmt.Sprintf("%.0f/s", dr))
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		bq, oq := percentile(b.durs, p.q), percentile(o.durs, p.q)
		t.add(label+": "+p.name, ms(bq), ms(oq), ratio(float64(oq), float64(bq)), ms(percentile(dd.durs, p.q)))
	}
}

// 3. GetPublicKey for a key the plugin already holds: no vault request expected.
func getKeyCached(t *table, f *fakeVault, subjects []*subject, n, rounds int) {
	setVault(f, 0, 0, 0)
	ctx := context.Background()
	op := func(s *subject) func() error {
		return func() error {
			_, err := s.km.GetKey(ctx, signKeyID)
			return err
		}
	}
	for _, s := range subjects {
		run(1, 100, op(s))
	}
	before, err := f.stats()
	must(err)
	_ = before
	res := alternate(subjects, rounds, func(s *subject) sample { return run(1, n, op(s)) })
	after, err := f.stats()
	must(err)
	b, o := pooled(res[subjects[0]]), pooled(res[subjects[1]])
	failures("built-in", b)
	failures("this plugin", o)
	label := fmt.Sprintf("GetPublicKey of a held key, 1 caller (%d calls per round)", n)
	bps, ops := float64(len(b.durs))/b.wall.Seconds(), float64(len(o.durs))/o.wall.Seconds()
	t.add(label+": calls/s", fmt.Sprintf("%.0f/s", bps), fmt.Sprintf("%.0f/s", ops), ratio(ops, bps), fmt.Sprintf("%d vault requests during both", after.requests))
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		bq, oq := percentile(b.durs, p.q), percentile(o.durs, p.q)
		t.add(label+": "+p.name, ms(bq), ms(oq), ratio(float64(oq), float64(bq)), "")
	}
}

// 4. A burst of signatures against Key Vault's sign throttling: `total` signatures from
// `callers` goroutines, the vault allowing `rate`/s after a burst of `burst` and answering the
// rest 429 with Retry-After: 1. The floor is the time the limit alone needs.
func throttledBurst(t *table, f *fakeVault, d *directClient, subjects []*subject, rate, burst, total, callers, rounds int) {
	// What the fake answers with no limit, same callers: far above `rate`, so the limit is
	// what the plugins meet.
	setVault(f, 0, 0, 0)
	dsample := run(callers, total, d.sign)
	drate := float64(len(dsample.durs)) / dsample.wall.Seconds()
	// And what this plugin does unthrottled with as many callers, so that a rate below the
	// limit can be told apart from a plugin (or a machine) that cannot go faster. Its first
	// throttled round still starts knowing nothing: the limit is off here, no 429 is seen.
	osample := run(callers, total, signOp(subjects[1].key))
	orate := float64(len(osample.durs)) / osample.wall.Seconds()

	var throttled []int64
	res := alternate(subjects, rounds, func(s *subject) sample {
		// A fresh, full bucket per run, after any Retry-After from the previous run expired.
		time.Sleep(1500 * time.Millisecond)
		setVault(f, 0, rate, burst)
		before, err := f.stats()
		must(err)
		out := run(callers, total, signOp(s.key))
		st, err := f.stats()
		must(err)
		// The fake counts 429s since it started.
		throttled = append(throttled, st.throttled-before.throttled)
		return out
	})
	must(f.command("limit 0 0"))
	floor := time.Duration(float64(total-burst) / float64(rate) * float64(time.Second))
	label := fmt.Sprintf("Throttled %d/s, burst %d: %d signatures, %d callers", rate, burst, total, callers)
	stat := func(s *subject, fn func(sample) float64) float64 {
		var xs []float64
		for _, x := range res[s] {
			xs = append(xs, fn(x))
		}
		return median(xs)
	}
	b, o := subjects[0], subjects[1]
	failed := func(x sample) float64 { return float64(x.failed) }
	sps := func(x sample) float64 { return float64(len(x.durs)) / x.wall.Seconds() }
	makespan := func(x sample) float64 { return x.wall.Seconds() }
	t.add(label+": failed signatures (median)", fmt.Sprintf("%.0f", stat(b, failed)), fmt.Sprintf("%.0f", stat(o, failed)), "", "")
	t.add(label+": signatures/s (median)", fmt.Sprintf("%.1f/s", stat(b, sps)), fmt.Sprintf("%.1f/s", stat(o, sps)), ratio(stat(o, sps), stat(b, sps)), fmt.Sprintf("unthrottled %.0f/s; this plugin unthrottled %.0f/s", drate, orate))
	t.add(label+": makespan, median (floor "+fmt.Sprintf("%.2f s", floor.Seconds())+")",
		fmt.Sprintf("%.2f s (%.2f× floor)", stat(b, makespan), stat(b, makespan)/floor.Seconds()),
		fmt.Sprintf("%.2f s (%.2f× floor)", stat(o, makespan), stat(o, makespan)/floor.Seconds()),
		ratio(stat(o, makespan), stat(b, makespan)), "")
	bp, op := pooled(res[b]), pooled(res[o])
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		bq, oq := percentile(bp.durs, p.q), percentile(op.durs, p.q)
		t.add(label+": "+p.name+" of successful signatures", ms(bq), ms(oq), ratio(float64(oq), float64(bq)), "")
	}
	// throttled alternates built-in, this plugin per round.
	var bt, ot []float64
	for i, n := range throttled {
		if i%2 == 0 {
			bt = append(bt, float64(n))
		} else {
			ot = append(ot, float64(n))
		}
	}
	t.add(label+": 429s the vault answered (median)", fmt.Sprintf("%.0f", median(bt)), fmt.Sprintf("%.0f", median(ot)), "", "")
	// This plugin was loaded fresh for the scenario: its first round starts knowing nothing of
	// the vault's limit, the later ones pace at what it learned (the median is one of those).
	first := res[o][0]
	t.add(label+": this plugin's first round (nothing learned yet): signatures/s, makespan, 429s", "",
		fmt.Sprintf("%.1f/s, %.2f s (%.2f× floor), %d", sps(first), first.wall.Seconds(), first.wall.Seconds()/floor.Seconds(), int64(ot[0])), "", "")
}

// 5. Configure (catalog.Load, as spire-server starts) on a vault holding `total` keys, `ours`
// of them the server's, in the built-in's naming and tags, which this plugin also adopts.
// Configure only reads the vault, so both plugins load the same server id on the same keys.
func configure(t *table, f *fakeVault, subjects []*subject, bin, checksum string, latencyMs, total, ours, rounds int) {
	setVault(f, 0, 0, 0)
	idBytes := make([]byte, 8)
	_, err := rand.Read(idBytes)
	must(err)
	serverID := "bench-cfg-" + hex.EncodeToString(idBytes)
	// spire-key-<UUID>-<SPIRE key id>: the built-in reads the key id after the UUID.
	u := make([]byte, 16)
	_, err = rand.Read(u)
	must(err)
	h := hex.EncodeToString(u)
	uuid := h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	prefix := fmt.Sprintf("spire-key-%s-cfg-", uuid)
	must(f.command(fmt.Sprintf("insert %s 0 %d spire-server-td=%s spire-server-id=%s", prefix, ours, trustDomain, serverID)))
	must(f.command(fmt.Sprintf("insert filler-%s- 0 %d", hex.EncodeToString(idBytes), total-ours)))
	setVault(f, latencyMs, 0, 0)
	ctx := context.Background()
	var reqs []int64
	res := alternate(subjects, rounds, func(s *subject) sample {
		pluginBin, sum := "", ""
		if s != subjects[0] {
			pluginBin, sum = bin, checksum
		}
		start := time.Now()
		loaded, err := loadWithID(ctx, s.name, pluginBin, sum, serverID)
		took := time.Since(start)
		out := sample{durs: []time.Duration{took}, wall: took}
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-bench: %s: load: %v\n", s.name, err)
			out = sample{failed: 1}
		} else {
			keys, err := loaded.km.GetKeys(ctx)
			if err != nil || len(keys) != ours {
				fmt.Fprintf(os.Stderr, "go-bench: %s: %d keys after Configure, want %d (%v)\n", s.name, len(keys), ours, err)
				out.failed = 1
			}
			loaded.cat.Close()
		}
		st, err := f.stats()
		must(err)
		reqs = append(reqs, st.requests)
		return out
	})
	setVault(f, 0, 0, 0)
	pages := (total + 24) / 25
	label := fmt.Sprintf("Configure (catalog.Load), %d keys, %d the server's, %d ms vault latency", total, ours, latencyMs)
	med := func(s *subject) float64 {
		var xs []float64
		for _, x := range res[s] {
			if x.failed == 0 {
				xs = append(xs, x.wall.Seconds()*1000)
			}
		}
		return median(xs)
	}
	b, o := med(subjects[0]), med(subjects[1])
	t.add(label+": median", fmt.Sprintf("%.1f ms", b), fmt.Sprintf("%.1f ms", o), ratio(o, b), fmt.Sprintf("%d list pages × latency = %d ms", pages, pages*latencyMs))
	var bq, oq []float64
	for i, n := range reqs {
		if i%2 == 0 {
			bq = append(bq, float64(n))
		} else {
			oq = append(oq, float64(n))
		}
	}
	t.add(label+": vault requests per load (median)", fmt.Sprintf("%.0f", median(bq)), fmt.Sprintf("%.0f", median(oq)), "", "")
}
