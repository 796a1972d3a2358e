package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

// runBilling measures how many served-byte receipts billing verifies and
// stores per second when an edge signs a batch per epoch, against the same
// receipts each signed alone (one ed25519 verification per record), in
// the same run, through the same checks and the same SQLite ledger.
func runBilling(ctx context.Context, args []string) error {
	fset := newFlagSet("billing",
		"Ingest throughput of verified, stored receipts: batches signed once per epoch",
		"vs every record signed alone, through billing.Ledger on SQLite (fresh database",
		"per run; signing is the edge's work and is not timed).",
	)
	runs := fset.Int("runs", 3, "timed runs of each format")
	records := fset.Int("records", 100000, "receipts per run")
	perBatch := fset.Int("batch", 10000, "records per batch (per epoch)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	if *runs < 1 || *records < 1 || *perBatch < 1 || *records%*perBatch != 0 {
		return errors.New("billing: -runs, -records and -batch must be positive, -records a multiple of -batch")
	}
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cache, "billing-work-")
	if err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	defer os.RemoveAll(work)

	edge, err := identity.Generate(nil)
	if err != nil {
		return err
	}
	pub, err := identity.Generate(nil)
	if err != nil {
		return err
	}
	if *records / *perBatch > billingapi.MaxParts {
		return fmt.Errorf("billing: at most %d batches (-records / -batch)", billingapi.MaxParts)
	}
	// Billing pays only an admitted edge, for epochs that end after its
	// admission (each run admits it anew): every batch is a part of the
	// current epoch, whose length leaves it 10 minutes at least.
	now := time.Now().Unix()
	epochSecs := int64(3600)
	for epochSecs-now%epochSecs < 600 {
		epochSecs += 600
	}
	start := now - now%epochSecs
	fmt.Fprintf(os.Stderr, "billing: signing %d receipts both ways...\n", *records)
	batches, singles, err := signReceipts(edge, start, epochSecs, *records, *perBatch)
	if err != nil {
		return err
	}
	content := benchContent{pub: pub.ID}

	ingest := func(run int, format string) (time.Duration, error) {
		db, err := billing.OpenDB(ctx, filepath.Join(work, format+"-"+strconv.Itoa(run)+".db"))
		if err != nil {
			return 0, err
		}
		defer db.Close()
		l, err := billing.New(ctx, db, content, pub.ID, billing.Config{Epoch: time.Duration(epochSecs) * time.Second})
		if err != nil {
			return 0, err
		}
		admission, err := pub.Sign(billingapi.TypeAdmission, billingapi.Admission{Edge: edge.ID.String(), Nonce: "bench"})
		if err != nil {
			return 0, err
		}
		if _, err := l.Admit(ctx, admission); err != nil {
			return 0, err
		}
		accepted := 0
		t0 := time.Now()
		if format == "batch" {
			for _, env := range batches {
				res, err := l.IngestBatch(ctx, env, netip.Addr{})
				if err != nil {
					return 0, err
				}
				accepted += res.Accepted
			}
		} else {
			for i := 0; i < len(singles); i += *perBatch {
				res, err := l.IngestRecords(ctx, singles[i:i+*perBatch], netip.Addr{})
				if err != nil {
					return 0, err
				}
				accepted += res.Accepted
			}
		}
		d := time.Since(t0)
		if accepted != *records {
			return 0, fmt.Errorf("billing: %s: %d of %d receipts accepted", format, accepted, *records)
		}
		return d, nil
	}
	times := map[string][]time.Duration{}
	for run := range *runs {
		for _, format := range []string{"batch", "per-record"} {
			d, err := ingest(run, format)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "billing: run %d %-10s %8.0f receipts/s\n", run+1, format, float64(*records)/d.Seconds())
			times[format] = append(times[format], d)
		}
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b, p := median(times["batch"]), median(times["per-record"])
	fmt.Printf("billing ingest: %d receipts, %d per batch, median of %d runs, SQLite (synchronous=FULL)\n", *records, *perBatch, *runs)
	fmt.Printf("  batch signature   %10.0f receipts/s  (%s)\n", float64(*records)/b.Seconds(), b.Round(time.Millisecond))
	fmt.Printf("  per-record sigs   %10.0f receipts/s  (%s)\n", float64(*records)/p.Seconds(), p.Round(time.Millisecond))
	fmt.Printf("  speed-up          %10.1fx (goal >= 10x)\n", p.Seconds()/b.Seconds())
	return nil
}

// signReceipts signs the same receipts as batches of perBatch records, one
// epoch each, and each alone.
func signReceipts(edge *identity.Key, start, epochSecs int64, n, perBatch int) ([]*identity.Envelope, []*identity.Envelope, error) {
	salt := make([]byte, billingapi.SaltSize)
	client := billingapi.ClientHash(salt, netip.MustParseAddr("192.0.2.1"))
	var batches, singles []*identity.Envelope
	epoch := start
	for b := 0; b < n/perBatch; b++ {
		recs := make([]billingapi.Record, perBatch)
		for i := range recs {
			serial := uint64(b*perBatch + i + 1)
			recs[i] = billingapi.Record{Serial: serial, Name: "site", CID: "bafkobject" + strconv.Itoa(i%100), Bytes: 1000 + int64(i%500),
				Status: 200, Time: epoch*1000 + int64(i%(int(epochSecs)*1000)), Client: client}
			env, err := edge.Sign(billingapi.TypeRecord, billingapi.RecordClaim{Edge: edge.ID.String(), Epoch: epoch,
				EpochSeconds: epochSecs, Salt: salt, Record: recs[i]})
			if err != nil {
				return nil, nil, err
			}
			singles = append(singles, env)
		}
		batch := billingapi.Batch{Edge: edge.ID.String(), Epoch: epoch, EpochSeconds: epochSecs, Part: b, Seq: uint64(b + 1),
			Salt: salt, Records: recs, MerkleRoot: billingapi.MerkleRoot(recs)}
		env, err := edge.Sign(billingapi.TypeBatch, &batch)
		if err != nil {
			return nil, nil, err
		}
		batches = append(batches, env)
	}
	return batches, singles, nil
}

// benchContent publishes every object, of 4 KiB, by pub.
type benchContent struct{ pub peer.ID }

func (c benchContent) Object(ctx context.Context, name, root, cid string) (witness.Object, error) {
	return witness.Object{Publisher: c.pub, MaxBytes: 4096}, nil
}

func (c benchContent) ShardPublisher(ctx context.Context, shard string) (peer.ID, error) {
	return c.pub, nil
}

func (c benchContent) Holdings(ctx context.Context) ([]witness.Holding, error) { return nil, nil }

var _ billing.Content = benchContent{}
