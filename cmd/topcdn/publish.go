package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/boxo/ipns"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// publishFlags are topcdn publish's flags.
type publishFlags struct {
	name, originURL, keyFile, carFile, chunker, hash  string
	cidVersion                                        int
	rawLeaves, hidden, trickle, onlyHash, quiet, file bool
	ttl, lifetime                                     time.Duration
}

func newPublishCmd() *cobra.Command {
	var p publishFlags
	cmd := &cobra.Command{
		Use:   "publish DIR --name NAME --origin URL --key FILE",
		Short: "Publish a directory (or a CAR) under a name",
		Long: `publish imports DIR as a UnixFS DAG, uploads the blocks the origin lacks as a
CAR stream, and points NAME at the new root with an IPNS record signed by
the key in FILE. The upload is signed with the same key: the origin
accepts only signed uploads and charges the bytes new to it to the key's
quota (see 'topcdn origin --publisher-quota').

The defaults give the root CID that kubo's 'ipfs add -r --cid-version=1'
gives for the same directory: CIDv1, raw leaves, sha2-256, 256 KiB chunks,
balanced layout, HAMT-sharded big directories, hidden files skipped.
--chunker, --cid-version, --raw-leaves, --hash, --hidden and --trickle behave
as kubo's flags of the same names.

With --car FILE the DAG is read from an existing CAR (v1 or v2), as
'ipfs dag import' would, so any IPLD content can be published; its first
root is the one NAME points to.

DIR must be a directory: a file would replace the whole site NAME with a
one-file site, so publishing one needs --file.

A name is claimed by the first key that publishes it; later publishes must
use the same key. One key publishes one name: to publish a second site,
create a second key ('topcdn keygen --out docs.key') and publish the
second name with it.

Before importing anything, publish asks the origin whether this key may
upload there and publish NAME (allowed key, funds at billing, name
ownership), so a refusal costs no import, no upload and no quota.

--origin defaults to http://127.0.0.1:8081, where 'topcdn origin' listens by
default; 'make demo' (topcdn devnet) runs its origin on
http://127.0.0.1:7070: give --origin or set TOPCDN_ORIGIN.`,
		Example: `  topcdn keygen --out publisher.key
  topcdn publish ./site --name blog --origin http://127.0.0.1:8081 --key publisher.key
  TOPCDN_ORIGIN=http://127.0.0.1:7070 topcdn publish ./site --name blog --key publisher.key  # make demo's origin
  topcdn keygen --out docs.key && topcdn publish ./docs --name docs --key docs.key          # a second site
  topcdn publish ./notice.html --file --name notice --key notice.key
  topcdn publish --only-hash -Q ./site
  topcdn publish --car site.car --name blog --key publisher.key`,
		Args: cobra.MaximumNArgs(1),
		RunE: p.run,
	}
	f := cmd.Flags()
	f.StringVar(&p.name, "name", "", "human name to publish under, e.g. blog")
	f.StringVar(&p.originURL, "origin", envOr("TOPCDN_ORIGIN", defaultOriginURL), "origin URL ($TOPCDN_ORIGIN; make demo's is "+demoOriginURL+")")
	f.StringVar(&p.keyFile, "key", os.Getenv("TOPCDN_KEY"), "publisher key file ($TOPCDN_KEY)")
	f.StringVar(&p.carFile, "car", "", "publish this CAR file instead of a directory")
	f.BoolVar(&p.file, "file", false, "publish a single file as the whole site (the argument must be a file)")
	f.StringVar(&p.chunker, "chunker", publish.DefaultChunker, "chunking algorithm: size-N, rabin[-MIN-AVG-MAX] or buzhash")
	f.IntVar(&p.cidVersion, "cid-version", publish.DefaultCidVersion, "CID version, 0 or 1 (1 implies --raw-leaves)")
	f.BoolVar(&p.rawLeaves, "raw-leaves", false, "use raw blocks for leaves (default: true for CIDv1, false for CIDv0)")
	f.StringVar(&p.hash, "hash", publish.DefaultHash, "multihash function (anything but sha2-256 needs CIDv1)")
	f.BoolVar(&p.hidden, "hidden", false, "include files whose names start with a dot")
	f.BoolVar(&p.trickle, "trickle", false, "use the trickle DAG layout instead of balanced")
	f.BoolVar(&p.onlyHash, "only-hash", false, "only compute and print the root CID; send nothing")
	f.BoolVarP(&p.quiet, "quiet", "Q", false, "print only the root CID")
	f.DurationVar(&p.ttl, "ttl", publish.DefaultNameTTL, "how long readers may cache the name's record")
	f.DurationVar(&p.lifetime, "lifetime", publish.DefaultNameLifetime, "how long the name's record stays valid")
	return cmd
}

// run publishes the directory in args (or --car), or with --only-hash
// prints its root CID. Everything that can be checked before the import
// is: the arguments, the key, and with the origin whether it would take
// the upload and the name.
func (p *publishFlags) run(cmd *cobra.Command, args []string) error {
	if (len(args) == 1) == (p.carFile != "") {
		return errors.New("give either a directory or --car FILE")
	}
	if p.onlyHash {
		if p.carFile != "" {
			return errors.New("--only-hash applies to directories; a CAR's roots are in its header")
		}
		_, err := p.importDir(cmd, args[0])
		return err
	}
	if p.name == "" {
		return errors.New("--name is required (or use --only-hash)")
	}
	if p.keyFile == "" {
		return errors.New("--key is required (create one with 'topcdn keygen --out FILE')")
	}
	if err := originapi.ValidateName(p.name); err != nil {
		return err
	}
	if p.carFile == "" {
		if err := p.checkSource(args[0]); err != nil {
			return err
		}
	} else if p.file {
		return errors.New("--file publishes a file as a site; a CAR is published with --car alone")
	}
	key, err := identity.Load(p.keyFile)
	if err != nil {
		return err
	}
	client, err := publish.NewClient(p.originURL, nil)
	if err != nil {
		return err
	}
	if err := p.precheck(cmd, client, key); err != nil {
		return err
	}
	var src publish.Source
	if p.carFile != "" {
		cf, err := publish.OpenCAR(p.carFile)
		if err != nil {
			return err
		}
		defer cf.Close()
		src = cf
	} else {
		d, err := p.importDir(cmd, args[0])
		if err != nil {
			return err
		}
		src = d
	}
	return p.upload(cmd, client, key, src)
}

// checkSource requires path to be a directory, or a regular file with
// --file: a file published by mistake would replace the whole site.
func (p *publishFlags) checkSource(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	switch {
	case st.IsDir() && p.file:
		return fmt.Errorf("--file: %s is a directory; publish it without --file", path)
	case !st.IsDir() && !p.file:
		return fmt.Errorf("%s is a file, not a directory: publishing it would replace the whole site %q with this one file; "+
			"publish the directory that holds the site, or give --file if a one-file site is what you want", path, p.name)
	}
	return nil
}

// precheck asks the origin, before anything is imported, whether key may
// upload there and publish the name, so a refusal costs no import, upload
// or quota. An origin without the check is told so and publishing goes on.
func (p *publishFlags) precheck(cmd *cobra.Command, client *publish.Client, key *identity.Key) error {
	u, err := client.Check(cmd.Context(), key.ID, p.name)
	if errors.Is(err, publish.ErrNoCheck) {
		fmt.Fprintf(p.status(cmd), "note: the origin at %s cannot check a publish before it; a refusal will come after the upload\n", p.originURL)
		return nil
	}
	if err != nil {
		return p.originErr(err)
	}
	if u.QuotaBytes > 0 && u.UsedBytes >= u.QuotaBytes {
		fmt.Fprintf(p.status(cmd), "warning: %s has used all of its %s quota at the origin: only content the origin already holds can be published\n",
			key.ID, humanize.IBytes(uint64(u.QuotaBytes)))
	}
	return nil
}

// importDir imports dir with the import flags, showing progress; with
// --only-hash it prints the root CID.
func (p *publishFlags) importDir(cmd *cobra.Command, dir string) (*publish.DAG, error) {
	opts := []publish.Option{
		publish.WithChunker(p.chunker),
		publish.WithCidVersion(p.cidVersion),
		publish.WithHash(p.hash),
		publish.WithHidden(p.hidden),
		publish.WithTrickle(p.trickle),
	}
	if cmd.Flags().Changed("raw-leaves") {
		opts = append(opts, publish.WithRawLeaves(p.rawLeaves))
	}
	if p.onlyHash {
		opts = append(opts, publish.WithOnlyHash())
	}
	var bar publish.Progress = publish.NewProgress(nil, "", 0)
	if !p.quiet {
		if total, err := dirSize(dir, p.hidden); err == nil {
			bar = publish.NewProgress(cmd.ErrOrStderr(), "import", total)
		}
	}
	opts = append(opts, publish.WithProgress(bar.Add))
	d, err := publish.ImportDir(cmd.Context(), dir, opts...)
	bar.Finish()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(p.status(cmd), "imported %d files, %s: %s\n", d.Files, humanize.IBytes(uint64(d.FileBytes)), d.Root)
	if p.onlyHash {
		fmt.Fprintln(cmd.OutOrStdout(), d.Root)
	}
	return d, nil
}

// upload sends the blocks of src the origin lacks and points the name at
// its first root.
func (p *publishFlags) upload(cmd *cobra.Command, client *publish.Client, key *identity.Key, src publish.Source) error {
	ctx, stdout, status := cmd.Context(), cmd.OutOrStdout(), p.status(cmd)
	root := src.Roots()[0]
	var progress func(int64) publish.Progress
	if !p.quiet {
		progress = func(total int64) publish.Progress {
			return publish.NewProgress(cmd.ErrOrStderr(), "upload", total)
		}
	}
	pushed, err := client.Push(ctx, key, src, progress)
	if err != nil {
		return p.originErr(err)
	}
	fmt.Fprintf(status, "uploaded %d of %d blocks (%s)", pushed.Sent, pushed.Blocks, humanize.IBytes(uint64(pushed.SentBytes)))
	if had := pushed.Blocks - pushed.Sent; had > 0 {
		fmt.Fprintf(status, "; the origin already had %d", had)
	}
	fmt.Fprintln(status)
	if up := pushed.Upload; up.QuotaBytes > 0 {
		fmt.Fprintf(status, "quota: %s of %s used\n", humanize.IBytes(uint64(up.UsedBytes)), humanize.IBytes(uint64(up.QuotaBytes)))
	}
	ni, err := client.PublishName(ctx, p.name, key, root, publish.NameOptions{TTL: p.ttl, Lifetime: p.lifetime})
	if err != nil {
		return p.originErr(err)
	}
	if p.quiet {
		fmt.Fprintln(stdout, root)
		return nil
	}
	fmt.Fprintf(stdout, "root  %s\nname  %s -> %s (sequence %d)\nipns  %s\n",
		root, ni.Name, ni.Value, ni.Sequence, ipns.NameFromPeer(key.ID))
	return nil
}

// Where origins listen: defaultOriginURL is --origin's default, where
// 'topcdn origin' listens by default (its --listen); demoOriginURL is
// where 'make demo' (topcdn devnet, devnet/devnet.go) runs its origin,
// and demoBillingURL its billing.
const (
	defaultOriginURL = "http://127.0.0.1:8081"
	demoOriginURL    = "http://127.0.0.1:7070"
	demoBillingURL   = "http://127.0.0.1:7080"
)

// originErr adds to an error from the origin where to look: for an
// origin that does not answer, which URL was tried and where origins
// listen; for a publisher without funds, how to deposit.
func (p *publishFlags) originErr(err error) error {
	var oe *publish.OriginError
	var ue *url.Error
	switch {
	case errors.As(err, &oe) && oe.Status == http.StatusPaymentRequired:
		return fmt.Errorf("%w\n(deposit with 'topcdn billing deposit --billing URL ...'; make demo's billing is %s)", err, demoBillingURL)
	case errors.As(err, &oe), errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &ue):
		return fmt.Errorf("%w\nno origin answers at %s: 'topcdn origin' listens on %s by default, make demo's origin on %s; "+
			"give --origin URL or set TOPCDN_ORIGIN", err, p.originURL, defaultOriginURL, demoOriginURL)
	}
	return err
}

// status is where progress lines go: standard error, or nowhere with -Q.
func (p *publishFlags) status(cmd *cobra.Command) io.Writer {
	if p.quiet {
		return io.Discard
	}
	return cmd.ErrOrStderr()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
