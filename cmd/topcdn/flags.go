package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/pflag"
)

// sizeFlag is a flag holding a byte count, given with units (256MiB,
// 1GiB, 10GB) or as a plain number. A negative size (-1) turns off what
// can be turned off, as every Config's negative values do.
type sizeFlag struct{ p *int64 }

// sizeVar defines a size flag with default def, stored in p.
func sizeVar(f *pflag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	f.Var(sizeFlag{p}, name, usage)
}

func (s sizeFlag) Set(v string) error {
	abs, neg := strings.CutPrefix(v, "-")
	n, err := humanize.ParseBytes(abs)
	if err != nil {
		return err
	}
	if n > math.MaxInt64 {
		return fmt.Errorf("%s is too large", v)
	}
	if *s.p = int64(n); neg {
		*s.p = -*s.p
	}
	return nil
}

// String gives the size in the largest binary unit that holds it whole,
// as a flag's default is shown: 10GiB, 64MiB, 1000.
func (s sizeFlag) String() string {
	n := *s.p
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (sizeFlag) Type() string { return "size" }

var _ pflag.Value = sizeFlag{}

// originsFlag registers --origin on f: the origins' base URLs, repeatable
// or separated by commas, tried in order when one cannot answer.
func originsFlag(f *pflag.FlagSet, p *[]string, what string) {
	f.StringSliceVar(p, "origin", nil, what+" (several: repeat the flag or separate by commas; tried in order when one cannot answer)")
}

// originIDsFlag registers --origin-id on f: the origins' peer IDs to pin,
// repeatable or separated by commas.
func originIDsFlag(f *pflag.FlagSet, p *[]string, what string) {
	f.StringSliceVar(p, "origin-id", nil, what+" (repeatable: one per origin, each signs with its own key)")
}

// decodePeerIDs decodes the peer IDs given to flag.
func decodePeerIDs(flag string, strs []string) ([]peer.ID, error) {
	ids := make([]peer.ID, 0, len(strs))
	for _, s := range strs {
		id, err := peer.Decode(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flag, s, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
