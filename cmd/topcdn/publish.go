package main

import (
	"cmp"
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
	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// publishFlags are topcdn publish's flags.
type publishFlags struct {
	name, originURL, keyFile, carFile, chunker, hash  string
	keystore, billingURL, root                        string
	cidVersion                                        int
	rawLeaves, hidden, trickle, onlyHash, quiet, file bool
	noName, force                                     bool
	ttl, lifetime                                     time.Duration

	// account is the keystore's account key when the signing key is one
	// of its site keys (no --key), for the hint on a refusal for funds.
	account *identity.Key
}

func newPublishCmd() *cobra.Command {
	var p publishFlags
	cmd := &cobra.Command{
		Use:   "publish DIR --name NAME [--origin URL] [--key FILE | --keystore DIR]",
		Short: "Publish a directory (or a CAR) under a name, preview it, or roll the name back",
		Long: `publish imports DIR as a UnixFS DAG, uploads the blocks the origin lacks as a
CAR stream, and points NAME at the new root with an IPNS record signed by
the site's key. The upload is signed with the same key: the origin accepts
only signed uploads and charges the bytes new to it to the key's quota
(see 'topcdn origin --publisher-quota').

Keys. Without --key, the site's key comes from the keystore (--keystore
DIR, default $TOPCDN_KEYSTORE, else $XDG_CONFIG_HOME/topcdn/keys, else
~/.config/topcdn/keys): DIR/sites/NAME.key, created on the first publish of
NAME ("created key for NAME: 12D3…"), as 'ipfs key gen NAME' would; one
key publishes one name, so each site has its own. DIR/account.key is the
account that pays for all of them: deposit to its peer ID, and publish
links each site key to it at billing (the site key consents, the account
signs), so the account's funds count for every site and its statement
lists each. Billing is the one the origin names (its --billing), or
--billing URL; if it cannot be reached, publish says so and goes on, and
links the key on a later publish. --key FILE (or $TOPCDN_KEY) signs with
that key instead and links nothing, as before the keystore.

Every publish prints the root, the immutable preview URL of exactly this
upload (http://ROOT.ipfs.DOMAIN/), the site's URL (http://NAME.DOMAIN/)
with the name's sequence, and its IPNS URL (http://K51….ipns.DOMAIN/);
DOMAIN is the origin's --domain. -Q prints the root alone.

--no-name uploads and prints the root and preview URL but does not move
the name: look at the preview, then publish again (the upload is then
free) or roll forward with --root. The upload is signed by NAME's key if
--name is given, else by the account key.

Rollback. 'publish --root CID --name NAME' (no DIR) points NAME back at a
root it pointed at before: it asks the origin for the name's history
(GET /api/v1/names/NAME/history), refuses a CID not in it unless --force
(any root the origin stores, a --no-name upload say), and signs the next
sequence. Nothing is imported or uploaded.

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
use the same key.

Before importing anything, publish asks the origin whether this key may
upload there and publish NAME (allowed key, funds at billing, name
ownership), so a refusal costs no import, no upload and no quota.

--origin defaults to http://127.0.0.1:8081, where 'topcdn origin' listens by
default; 'make demo' (topcdn devnet) runs its origin on
http://127.0.0.1:7070: give --origin or set TOPCDN_ORIGIN.`,
		Example: `  topcdn publish ./site --name blog                  # key: the keystore's sites/blog.key, created if new
  topcdn publish ./docs --name docs                  # a second site: its own key, the same account
  topcdn publish ./site --name blog --no-name        # upload and print the preview URL only
  topcdn publish --root bafy… --name blog            # roll blog back to an earlier root
  topcdn keygen --name docs                          # create a site key ahead
  topcdn publish ./site --name blog --origin http://127.0.0.1:8081 --key publisher.key
  TOPCDN_ORIGIN=http://127.0.0.1:7070 topcdn publish ./site --name blog  # make demo's origin
  topcdn publish ./notice.html --file --name notice
  topcdn publish --only-hash -Q ./site
  topcdn publish --car site.car --name blog --key publisher.key`,
		Args: cobra.MaximumNArgs(1),
		RunE: p.run,
	}
	f := cmd.Flags()
	f.StringVar(&p.name, "name", "", "human name to publish under, e.g. blog")
	f.StringVar(&p.originURL, "origin", envOr("TOPCDN_ORIGIN", defaultOriginURL), "origin URL, several separated by commas, tried in order ($TOPCDN_ORIGIN; make demo's is "+demoOriginURL+")")
	f.StringVar(&p.keyFile, "key", os.Getenv("TOPCDN_KEY"), "publisher key file ($TOPCDN_KEY); default: NAME's key in the keystore")
	f.StringVar(&p.keystore, "keystore", "", keystoreHelp)
	f.StringVar(&p.billingURL, "billing", os.Getenv("TOPCDN_BILLING"), "billing URL to link keystore site keys at ($TOPCDN_BILLING; default: the one the origin names)")
	f.BoolVar(&p.noName, "no-name", false, "upload and print the preview URL, but do not move the name")
	f.StringVar(&p.root, "root", "", "point --name at this earlier root instead of publishing a directory (a rollback)")
	f.BoolVar(&p.force, "force", false, "with --root: also a root the name never pointed at")
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

// validate checks the arguments and flags against each other, before
// anything is read or asked.
func (p *publishFlags) validate(args []string) error {
	switch {
	case p.root != "":
		switch {
		case len(args) > 0 || p.carFile != "":
			return errors.New("--root points the name at an uploaded root: give no directory and no --car")
		case p.noName:
			return errors.New("--root moves the name; --no-name does not: give one")
		case p.onlyHash || p.file:
			return errors.New("--root publishes nothing new: --only-hash and --file do not apply")
		case p.name == "":
			return errors.New("--root needs --name: the name to point at the root")
		}
		if _, err := cid.Decode(p.root); err != nil {
			return fmt.Errorf("--root %q: %w", p.root, err)
		}
	case (len(args) == 1) == (p.carFile != ""):
		return errors.New("give either a directory or --car FILE (or --root CID to roll back)")
	case p.force:
		return errors.New("--force applies to --root only")
	case p.onlyHash:
		if p.carFile != "" {
			return errors.New("--only-hash applies to directories; a CAR's roots are in its header")
		}
		return nil
	case p.name == "" && !p.noName:
		return errors.New("--name is required (or use --no-name or --only-hash)")
	case p.carFile != "" && p.file:
		return errors.New("--file publishes a file as a site; a CAR is published with --car alone")
	}
	if p.name != "" {
		return originapi.ValidateName(p.name)
	}
	return nil
}

// run publishes the directory in args (or --car), or with --only-hash
// prints its root CID, or with --root points the name at an earlier root.
// Everything that can be checked before the import is: the arguments, the
// key, and with the origin whether it would take the upload and the name.
func (p *publishFlags) run(cmd *cobra.Command, args []string) error {
	if err := p.validate(args); err != nil {
		return err
	}
	if p.onlyHash {
		_, err := p.importDir(cmd, args[0])
		return err
	}
	if len(args) == 1 {
		if err := p.checkSource(args[0]); err != nil {
			return err
		}
	}
	client, err := publish.NewClient(p.originURL, nil, originPoolLogger())
	if err != nil {
		return err
	}
	key, err := p.signingKey(cmd, client)
	if err != nil {
		return err
	}
	domain, err := p.precheck(cmd, client, key)
	if err != nil {
		return err
	}
	if p.root != "" {
		return p.rollback(cmd, client, key, domain)
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
	return p.upload(cmd, client, key, src, domain)
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
// It returns the domain the origin's sites are served under, for their
// URLs (origin.DefaultDomain if the origin does not say).
func (p *publishFlags) precheck(cmd *cobra.Command, client *publish.Client, key *identity.Key) (string, error) {
	name := p.name
	if p.noName {
		name = "" // only the upload: the name is not claimed
	}
	u, err := client.Check(cmd.Context(), key.ID, name)
	if errors.Is(err, publish.ErrNoCheck) {
		fmt.Fprintf(p.status(cmd), "note: the origin at %s cannot check a publish before it; a refusal will come after the upload\n", p.originURL)
		return origin.DefaultDomain, nil
	}
	if err != nil {
		return "", p.originErr(err)
	}
	if u.QuotaBytes > 0 && u.UsedBytes >= u.QuotaBytes && p.root == "" {
		fmt.Fprintf(p.status(cmd), "warning: %s has used all of its %s quota at the origin: only content the origin already holds can be published\n",
			key.ID, humanize.IBytes(uint64(u.QuotaBytes)))
	}
	return cmp.Or(u.Domain, origin.DefaultDomain), nil
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
// its first root (not with --no-name).
func (p *publishFlags) upload(cmd *cobra.Command, client *publish.Client, key *identity.Key, src publish.Source, domain string) error {
	ctx, status := cmd.Context(), p.status(cmd)
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
	switch up := pushed.Upload; {
	case up.Striped:
		fmt.Fprintln(status, "striped onto the storage peers")
	case up.StripeError != "":
		fmt.Fprintf(status, "kept on the origin; striping onto the storage peers will be retried: %s\n", up.StripeError)
	}
	if p.noName {
		if p.name != "" {
			fmt.Fprintf(status, "%s not moved (--no-name): 'topcdn publish --root %s --name %s' points it there\n", p.name, root, p.name)
		}
		return p.printURLs(cmd, domain, root, nil, key)
	}
	ni, err := client.PublishName(ctx, p.name, key, root, publish.NameOptions{TTL: p.ttl, Lifetime: p.lifetime})
	if err != nil {
		return p.originErr(err)
	}
	return p.printURLs(cmd, domain, root, ni, key)
}

// printURLs prints the root and where it is served, on standard output:
//
//	root     bafy…
//	preview  http://bafy….ipfs.cdn.test/
//	site     http://docs.cdn.test/  (sequence 7)
//	ipns     http://k51….ipns.cdn.test/
//
// The site and ipns lines only when the name moved (ni set); with -Q the
// root alone.
func (p *publishFlags) printURLs(cmd *cobra.Command, domain string, root cid.Cid, ni *originapi.NameInfo, key *identity.Key) error {
	stdout := cmd.OutOrStdout()
	if p.quiet {
		fmt.Fprintln(stdout, root)
		return nil
	}
	// A subdomain is one case-insensitive DNS label: CIDv1 in base32.
	label := cid.NewCidV1(root.Type(), root.Hash()).String()
	fmt.Fprintf(stdout, "root     %s\npreview  http://%s.ipfs.%s/\n", root, label, domain)
	if ni != nil {
		fmt.Fprintf(stdout, "site     http://%s.%s/  (sequence %d)\nipns     http://%s.ipns.%s/\n",
			ni.Name, domain, ni.Sequence, ipns.NameFromPeer(key.ID), domain)
	}
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
	case errors.As(err, &oe) && oe.Status == http.StatusPaymentRequired && p.account != nil:
		return fmt.Errorf("%w\n(deposit to the keystore's account %s with 'topcdn billing deposit --billing URL ...', which pays for its linked site keys; "+
			"make demo's billing is %s)", err, p.account.ID, demoBillingURL)
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
