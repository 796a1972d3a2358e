// Command bench is topcdn's benchmark harness.
//
// It is a tiny subcommand dispatcher; each benchmark lives in its own file
// and registers itself in [commands]. Run it from the repository root:
//
//	go run ./bench publish [flags]
//	go run ./bench erasure [flags]
//	go run ./bench edge [flags]
//	go run ./bench edge-memory [flags]
//	go run ./bench dns [flags]
//	go run ./bench billing [flags]
//	go run ./bench publish-latency [flags]
//	go run ./bench scale [flags]
//	go run ./bench help
//
// See bench/README.md for what each benchmark measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one benchmark subcommand.
type command struct {
	// name is the subcommand name used on the command line.
	name string
	// summary is a one-line description shown by "help".
	summary string
	// run executes the benchmark with the arguments following the
	// subcommand name. It writes human-readable results to stdout and
	// progress to stderr.
	run func(ctx context.Context, args []string) error
}

// commands lists every benchmark, in the order "help" shows them.
var commands = []command{
	{
		name:    "publish",
		summary: "hash a 256 MiB site with `topcdn publish --only-hash` vs `ipfs add --only-hash`",
		run:     runPublish,
	},
	{
		name:    "erasure",
		summary: "10+4 striping onto 14 real storage peers vs raw Reed-Solomon and plain fsynced writes; fast and degraded reads",
		run:     runErasure,
	},
	{
		name:    "edge",
		summary: "requests/s of topcdn's edge (cache hits and misses) vs Caddy file_server/respond/reverse_proxy and nginx, with wrk",
		run:     runEdge,
	},
	{
		name:    "edge-memory",
		summary: "the edge's peak RSS while it serves a working set 4× its memory_cache budget (goal ≤ budget + 20%)",
		run:     runEdgeMemory,
	},
	{
		name:    "dns",
		summary: "queries/s of `topcdn dns` (geo selection on) vs CoreDNS's file plugin, with dnsperf",
		run:     runDNS,
	},
	{
		name:    "publish-latency",
		summary: "seconds from `topcdn publish` (and `topcdn purge`) returning until every devnet edge serves it; p50/p99",
		run:     runPublishLatency,
	},
	{
		name:    "billing",
		summary: "receipts verified and stored per second: one signature per batch vs one per record",
		run:     runBilling,
	},
	{
		name:    "scale",
		summary: "the scale drill: 1,000 and 10,000 simulated edges on one router, 100,000 names, a billing epoch on PostgreSQL",
		run:     runScale,
	},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:])
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// errUsage reports an invalid command line; the usage text has already been
// printed when it is returned.
var errUsage = errors.New("usage error")

// dispatch runs the subcommand named by args[0].
func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		usage(os.Stderr)
		return errUsage
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		usage(os.Stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest)
		}
	}
	fmt.Fprintf(os.Stderr, "bench: unknown benchmark %q\n\n", name)
	usage(os.Stderr)
	return errUsage
}

// usage writes the list of benchmarks to w.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: go run ./bench <benchmark> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "benchmarks:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `go run ./bench <benchmark> -h` for a benchmark's flags; see bench/README.md.")
}

// newFlagSet returns the flag set of `go run ./bench NAME`: parse errors
// are returned, and -h prints the usage line, about (one line each) and
// the flags.
func newFlagSet(name string, about ...string) *flag.FlagSet {
	fset := flag.NewFlagSet(name, flag.ContinueOnError)
	fset.Usage = func() {
		w := fset.Output()
		fmt.Fprintf(w, "usage: go run ./bench %s [flags]\n\n", name)
		for _, l := range about {
			fmt.Fprintln(w, l)
		}
		fmt.Fprintln(w)
		fset.PrintDefaults()
	}
	return fset
}
