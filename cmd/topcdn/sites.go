package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/boxo/ipns"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/publish"
)

// sitesFlags are topcdn sites' flags.
type sitesFlags struct {
	keystore, originURL, billingURL string
	asJSON                          bool
}

func newSitesCmd() *cobra.Command {
	var f sitesFlags
	cmd := &cobra.Command{
		Use:   "sites [--keystore DIR] [--origin URL] [--billing URL] [--json]",
		Short: "List the keystore's sites: their root, sequence, size and bytes served",
		Long: `sites lists each site of the publisher keystore (DIR/sites/NAME.key, as
'topcdn publish --name NAME' creates them), and any other key billing
counts for the keystore's account (the account's own key, when it
published a site with --key), with:

  ROOT, SEQ, UPDATED  what the name points at, from the origin (GET /api/v1/names/NAME)
  SIZE                the bytes of the root as striped, from its signed manifest
  LAST EPOCH          bytes and requests the edges served for the key in the last
                      billing epoch that ended (edges report an epoch when it ends)
  THIS MONTH          the same since the start of the calendar month, UTC

The figures come from billing (GET /api/v1/accounts/ACCOUNT/sites): what the
edges reported and billing accepted, before settlement's checks. Billing is
--billing URL, else the one the origin names. A service that cannot be
reached is named, and what is known is printed.`,
		Example: `  topcdn sites
  topcdn sites --keystore ./keys --origin http://127.0.0.1:7070 --json`,
		Args: cobra.NoArgs,
		RunE: f.run,
	}
	fl := cmd.Flags()
	fl.StringVar(&f.keystore, "keystore", "", keystoreHelp)
	fl.StringVar(&f.originURL, "origin", envOr("TOPCDN_ORIGIN", defaultOriginURL), "origin URL ($TOPCDN_ORIGIN; make demo's is "+demoOriginURL+")")
	fl.StringVar(&f.billingURL, "billing", os.Getenv("TOPCDN_BILLING"), "billing URL ($TOPCDN_BILLING; default: the one the origin names)")
	fl.BoolVar(&f.asJSON, "json", false, "print the sites as JSON")
	return cmd
}

// sitesReport is what topcdn sites prints (--json: as is).
type sitesReport struct {
	// Sites are the keystore's sites by name, then other keys billing
	// counts for the account.
	Sites []siteRow `json:"sites"`
	// LastEpoch (start, Unix seconds) and EpochSeconds are billing's last
	// ended epoch; Month the start of the UTC month. Absent without
	// billing's answer.
	LastEpoch    int64      `json:"last_epoch,omitempty"`
	EpochSeconds int64      `json:"epoch_seconds,omitempty"`
	Month        *time.Time `json:"month,omitempty"`
	// Errors name the services that could not be reached, or why figures
	// are missing: "origin", "billing".
	Errors map[string]string `json:"errors,omitempty"`
}

// siteRow is one site. A field the services did not give is absent.
type siteRow struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	// Account is true for the account's own key; InKeystore false for a
	// key only billing named.
	Account    bool `json:"account,omitempty"`
	InKeystore bool `json:"in_keystore"`
	// Published is false when the origin knows no such name.
	Published bool       `json:"published"`
	Root      string     `json:"root,omitempty"`
	Sequence  uint64     `json:"sequence,omitempty"`
	Updated   *time.Time `json:"updated,omitempty"`
	// Size is the root's striped bytes; absent while it is not striped.
	Size      *int64              `json:"size,omitempty"`
	LastEpoch *billingapi.Traffic `json:"last_epoch,omitempty"`
	Month     *billingapi.Traffic `json:"month,omitempty"`
	// Note says what is odd, e.g. the name is bound to another key.
	Note string `json:"note,omitempty"`
}

func (f *sitesFlags) run(cmd *cobra.Command, _ []string) error {
	ks, err := openKeystore(f.keystore)
	if err != nil {
		return err
	}
	sites, err := ks.sites()
	if err != nil {
		return err
	}
	account, err := ks.existingAccount()
	if err != nil {
		return err
	}
	if len(sites) == 0 && account == nil {
		return fmt.Errorf("keystore %s holds no keys: 'topcdn publish DIR --name NAME' creates the site's key and the account", ks.dir)
	}
	client, err := publish.NewClient(f.originURL, nil)
	if err != nil {
		return err
	}
	rep := gatherSites(cmd.Context(), client, f.originURL, f.billingURL, account, sites)
	if f.asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return renderSites(cmd.OutOrStdout(), rep)
}

// gatherSites asks billing and the origin about the keystore's sites. A
// service that fails is named in the report's Errors and asked no more.
func gatherSites(ctx context.Context, client *publish.Client, originURL, billingURL string, account *identity.Key,
	sites []siteKey) *sitesReport {
	rep := &sitesReport{Sites: []siteRow{}, Errors: map[string]string{}}
	byKey := map[string]int{}
	for _, s := range sites {
		byKey[s.key.ID.String()] = len(rep.Sites)
		rep.Sites = append(rep.Sites, siteRow{Name: s.name, Key: s.key.ID.String(), InKeystore: true})
	}
	originUp := true
	if billingURL == "" {
		billingURL, originUp = billingOf(ctx, client, originURL, account, sites, rep)
	}
	if billingURL != "" {
		addTraffic(ctx, billingapi.NewClient(billingURL, &http.Client{Timeout: 30 * time.Second}), billingURL, account, rep, byKey)
	}
	if originUp {
		addNames(ctx, client, originURL, rep)
	}
	if len(rep.Errors) == 0 {
		rep.Errors = nil
	}
	return rep
}

// billingOf asks the origin which billing service it checks funds at, in
// the answer to a publish check of the account (or of a site key). It
// reports false when the origin could not be reached.
func billingOf(ctx context.Context, client *publish.Client, originURL string, account *identity.Key, sites []siteKey,
	rep *sitesReport) (string, bool) {
	var keys []*identity.Key
	if account != nil {
		keys = append(keys, account)
	}
	for _, s := range sites[:min(len(sites), 2)] {
		keys = append(keys, s.key)
	}
	var last error
	for _, k := range keys {
		u, err := client.Check(ctx, k.ID, "")
		var oe *publish.OriginError
		switch {
		case err == nil && u.Billing == "":
			rep.Errors["billing"] = "billing not known: the origin checks none; give --billing URL"
			return "", true
		case err == nil:
			return u.Billing, true
		case errors.As(err, &oe), errors.Is(err, publish.ErrNoCheck):
			last = err // refused (402 for a key without funds): ask with the next
		default:
			rep.Errors["origin"] = fmt.Sprintf("the origin at %s cannot be reached: %v", originURL, err)
			rep.Errors["billing"] = "billing not known: the origin names it; give --billing URL"
			return "", false
		}
	}
	rep.Errors["billing"] = fmt.Sprintf("billing not known: the origin did not name it (%v); give --billing URL", last)
	return "", true
}

// addTraffic adds billing's figures: the account's keys in one answer,
// and each keystore key billing does not count for the account on its own.
func addTraffic(ctx context.Context, bc *billingapi.Client, url string, account *identity.Key, rep *sitesReport, byKey map[string]int) {
	var asks []string
	if account != nil {
		asks = append(asks, account.ID.String())
	}
	for _, s := range rep.Sites {
		asks = append(asks, s.Key)
	}
	for _, id := range asks {
		if i, ok := byKey[id]; ok && rep.Sites[i].Month != nil {
			continue // the account's answer counted it
		}
		as, err := bc.AccountSites(ctx, id)
		if err != nil {
			rep.Errors["billing"] = fmt.Sprintf("billing at %s cannot be reached: %v", url, err)
			return
		}
		rep.LastEpoch, rep.EpochSeconds, rep.Month = as.LastEpoch, as.EpochSeconds, &as.Month
		for _, s := range as.Sites {
			i, ok := byKey[s.Key]
			if !ok {
				if s.Name == "" && s.Month.Requests == 0 {
					continue // the account's own key, with no site
				}
				i = len(rep.Sites)
				byKey[s.Key] = i
				rep.Sites = append(rep.Sites, siteRow{Name: s.Name, Key: s.Key})
			}
			row := &rep.Sites[i]
			row.Account = account != nil && s.Key == account.ID.String()
			row.LastEpoch, row.Month = &s.LastEpoch, &s.Month
			if row.Name == "" {
				row.Name = s.Name
			}
		}
	}
}

// addNames adds what the origin says of each named site: the root it
// points at, its sequence and size.
func addNames(ctx context.Context, client *publish.Client, originURL string, rep *sitesReport) {
	hc := &http.Client{Timeout: 30 * time.Second}
	for i := range rep.Sites {
		row := &rep.Sites[i]
		if row.Name == "" {
			continue
		}
		ni, err := client.LookupName(ctx, row.Name)
		var oe *publish.OriginError
		switch {
		case errors.As(err, &oe) && oe.Status == http.StatusNotFound:
			continue
		case err != nil:
			rep.Errors["origin"] = fmt.Sprintf("the origin at %s cannot be reached: %v", originURL, err)
			return
		}
		row.Published, row.Root, row.Sequence = true, ni.CID, ni.Sequence
		updated := ni.Updated.UTC()
		row.Updated = &updated
		if n, err := ipns.NameFromString(ni.IPNS); err == nil && n.Peer().String() != row.Key {
			row.Note = "the name is bound to another key, " + n.Peer().String()
		}
		var env identity.Envelope
		if err := httpkit.GetJSON(ctx, hc, strings.TrimSuffix(originURL, "/")+"/api/v1/manifests/"+ni.CID, 64<<20, &env); err != nil {
			continue // not striped yet, or gone: size unknown
		}
		var m erasure.Manifest
		if _, err := env.Open(erasure.TypeManifest, &m); err == nil {
			size := m.Size()
			row.Size = &size
		}
	}
}

// renderSites prints the report as a table, then what could not be
// known:
//
//	NAME  KEY               ROOT              SEQ  UPDATED (UTC)     SIZE     LAST EPOCH       THIS MONTH
//	docs  12D3Koo…a1b2c3  bafybei…x7y8z9  3    2026-02-01 10:00  1.2 MiB  3.4 KiB / 12 req  1.1 GiB / 40,000 req
func renderSites(w io.Writer, rep *sitesReport) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEY\tROOT\tSEQ\tUPDATED (UTC)\tSIZE\tLAST EPOCH\tTHIS MONTH")
	for _, s := range rep.Sites {
		name := s.Name
		switch {
		case name == "":
			name = "-"
		case !s.InKeystore && s.Account:
			name += " (account key)"
		case !s.InKeystore:
			name += " (not in keystore)"
		}
		root, seq, updated, size := "-", "-", "-", "-"
		switch {
		case s.Published:
			root, seq, updated = shortID(s.Root), fmt.Sprint(s.Sequence), s.Updated.Format("2006-01-02 15:04")
			size = "not striped yet"
			if s.Size != nil {
				size = humanize.IBytes(uint64(*s.Size))
			}
		case rep.Errors["origin"] == "" && s.Name != "":
			root = "not published"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, shortID(s.Key), root, seq, updated, size,
			traffic(s.LastEpoch), traffic(s.Month))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.Month != nil {
		start := time.Unix(rep.LastEpoch, 0).UTC()
		fmt.Fprintf(w, "\nlast epoch: %s–%s UTC, the last that ended; this month: %s (UTC)\n", start.Format("2006-01-02 15:04:05"),
			start.Add(time.Duration(rep.EpochSeconds)*time.Second).Format("15:04:05"), rep.Month.Format("January 2006"))
	}
	for _, s := range rep.Sites {
		if s.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Name, s.Note)
		}
	}
	what := map[string]string{"origin": "root, sequence and size unknown", "billing": "bytes served unknown"}
	keys := make([]string, 0, len(rep.Errors))
	for k := range rep.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s (%s)\n", rep.Errors[k], what[k])
	}
	return nil
}

// traffic formats bytes and requests, "-" when billing did not say.
func traffic(t *billingapi.Traffic) string {
	if t == nil {
		return "-"
	}
	return humanize.IBytes(uint64(t.Bytes)) + " / " + humanize.Comma(t.Requests) + " req"
}

// shortID abbreviates a peer ID or CID for a table: its first 7 and last
// 6 characters.
func shortID(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:7] + "…" + s[len(s)-6:]
}
