package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// signingKey returns the key that signs the upload and the name: --key
// FILE if given; else from the keystore NAME's site key (created if new,
// and linked to the account at billing), or with --no-name and no --name
// the account key.
func (p *publishFlags) signingKey(cmd *cobra.Command, client *publish.Client) (*identity.Key, error) {
	if p.keyFile != "" {
		return identity.Load(p.keyFile)
	}
	ks, err := openKeystore(p.keystore)
	if err != nil {
		return nil, err
	}
	if p.root != "" {
		// A rollback moves a name its key published: a new key could not.
		return ks.existingSite(p.name)
	}
	account, created, err := ks.account()
	if err != nil {
		return nil, err
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "created account key: %s (%s); deposit to it at billing\n", account.ID, ks.accountPath())
	}
	p.account = account
	if p.name == "" {
		return account, nil // --no-name: the account uploads
	}
	site, created, err := ks.site(p.name)
	if err != nil {
		return nil, err
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "created key for %s: %s (%s)\n", p.name, site.ID, ks.sitePath(p.name))
	}
	p.linkSite(cmd, client, account, site, created)
	return site, nil
}

// linkSite makes sure billing knows that account pays for the site key:
// it links the key (KeyLink) unless billing names account as its payer
// already. Billing is --billing, else the one the origin names. Nothing
// here stops the publish: without billing, or with billing unreachable,
// it says so (for a key created now, or when billing was to be asked) and
// the next publish tries again.
func (p *publishFlags) linkSite(cmd *cobra.Command, client *publish.Client, account, site *identity.Key, created bool) {
	ctx, status := cmd.Context(), cmd.ErrOrStderr()
	url := p.billingURL
	if url == "" {
		// The account's own check names the billing service even while
		// the new key cannot pay yet. An account without funds is refused
		// (402) with no answer: it must be funded first anyway.
		u, err := client.Check(ctx, account.ID, "")
		switch {
		case err != nil && created:
			fmt.Fprintf(status, "note: key for %s not linked to account %s: the origin did not name its billing (%v); "+
				"publish again, or give --billing URL\n", p.name, account.ID, err)
			return
		case err != nil:
			return
		}
		url = u.Billing
	}
	if url == "" {
		if created {
			fmt.Fprintf(status, "note: key for %s not linked to account %s: the origin checks no billing (give --billing URL to link it)\n",
				p.name, account.ID)
		}
		return
	}
	bc := billingapi.NewClient(url, nil)
	a, err := bc.Account(ctx, site.ID.String())
	switch {
	case err != nil:
		fmt.Fprintf(status, "note: billing at %s is not reachable (%v): key for %s not linked to account %s; the next publish tries again\n",
			url, err, p.name, account.ID)
		return
	case a.Payer == account.ID.String():
		return
	case a.Payer != "":
		fmt.Fprintf(status, "warning: key for %s is paid for by account %s at billing, not by this keystore's account %s\n",
			p.name, a.Payer, account.ID)
		return
	}
	li, err := bc.LinkKey(ctx, account, site)
	if err != nil {
		fmt.Fprintf(status, "note: could not link key for %s to account %s at %s: %v\n", p.name, account.ID, url, err)
		return
	}
	fmt.Fprintf(p.status(cmd), "linked key for %s to account %s at billing (it pays from epoch %d)\n", p.name, account.ID, li.FromEpoch)
}

// rollback points the name at an earlier root (--root): one the name
// pointed at according to the origin's history, or with --force any root
// the origin stores. The record's sequence is the next one, as for every
// publish.
func (p *publishFlags) rollback(cmd *cobra.Command, client *publish.Client, key *identity.Key, domain string) error {
	ctx := cmd.Context()
	root, err := cid.Decode(p.root)
	if err != nil {
		return fmt.Errorf("--root %q: %w", p.root, err)
	}
	h, err := client.NameHistory(ctx, p.name)
	var oe *publish.OriginError
	switch {
	case errors.As(err, &oe) && oe.Status == http.StatusNotFound && p.force:
	case errors.As(err, &oe) && oe.Status == http.StatusNotFound:
		return fmt.Errorf("%s has no history at the origin (it was never published): give --force to point it at %s anyway", p.name, root)
	case err != nil:
		return p.originErr(err)
	default:
		if !p.force && !inHistory(h, root) {
			return fmt.Errorf("%s never pointed at %s (the origin lists %d earlier roots: GET %s/api/v1/names/%s/history); "+
				"give --force to point it there anyway", p.name, root, len(h.Moves), p.originURL, p.name)
		}
	}
	ni, err := client.PublishName(ctx, p.name, key, root, publish.NameOptions{TTL: p.ttl, Lifetime: p.lifetime})
	if err != nil {
		return p.originErr(err)
	}
	fmt.Fprintf(p.status(cmd), "%s points at %s again\n", p.name, root)
	return p.printURLs(cmd, domain, root, ni, key)
}

// inHistory reports whether the name's history holds root (by its hash:
// a CIDv0 and its CIDv1 are the same root).
func inHistory(h *originapi.NameHistory, root cid.Cid) bool {
	for _, m := range h.Moves {
		if c, err := cid.Decode(m.Root); err == nil && c.Hash().String() == root.Hash().String() && c.Type() == root.Type() {
			return true
		}
	}
	return false
}
