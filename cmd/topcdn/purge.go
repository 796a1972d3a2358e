package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/publish"
)

// purgeFlags are topcdn purge's flags.
type purgeFlags struct {
	name, originURL, keyFile, keystore string
	paths                              []string
}

func newPurgeCmd() *cobra.Command {
	var p purgeFlags
	cmd := &cobra.Command{
		Use:   "purge --name NAME [--path P]... [--key FILE | --keystore DIR]",
		Short: "Make every edge drop its cached answers for a name",
		Long: `purge signs a purge of NAME with the key NAME is bound to and posts it to
the origin, which streams it to every edge: each drops its cached answers
for the site (all of them, or those of each --path; a path ending in "/"
covers everything under it) and asks anew on the next request. It prints
the ID of the change on the origin's stream; an edge whose health
(/.well-known/topcdn/health) reports a names_cursor at or past it has
applied it.

A publish needs no purge: edges follow the origin's stream of name
changes and serve a new root as soon as it is published. Content under
/ipfs/ never changes and is never purged. The origin takes each purge once
and at most 10 purges of a name per minute, 200 per day.

The purge is signed by --key FILE, else by NAME's key in the publisher
keystore (--keystore DIR, as 'topcdn publish' keeps it).`,
		Example: `  topcdn purge --name blog
  topcdn purge --name blog --key publisher.key
  topcdn purge --name blog --path /index.html --path /posts/ --key publisher.key`,
		Args: cobra.NoArgs,
		RunE: p.run,
	}
	f := cmd.Flags()
	f.StringVar(&p.name, "name", "", "the human name to purge, e.g. blog")
	f.StringArrayVar(&p.paths, "path", nil, "a path of the site to purge (repeatable; a trailing / purges everything under it); none: the whole site")
	f.StringVar(&p.originURL, "origin", envOr("TOPCDN_ORIGIN", defaultOriginURL), "origin URL, several separated by commas, tried in order ($TOPCDN_ORIGIN; make demo's is "+demoOriginURL+")")
	f.StringVar(&p.keyFile, "key", os.Getenv("TOPCDN_KEY"), "the key NAME is bound to ($TOPCDN_KEY); default: NAME's key in the keystore")
	f.StringVar(&p.keystore, "keystore", "", keystoreHelp)
	return cmd
}

func (p *purgeFlags) run(cmd *cobra.Command, _ []string) error {
	if p.name == "" {
		return errors.New("--name is required")
	}
	if err := originapi.ValidateName(p.name); err != nil {
		return err
	}
	for _, path := range p.paths {
		if strings.HasPrefix(path, "/ipfs/") {
			return fmt.Errorf("--path %s: content under /ipfs/ is addressed by its hash and never changes: it needs no purge", path)
		}
	}
	key, err := p.key()
	if err != nil {
		return err
	}
	client, err := publish.NewClient(p.originURL, nil, originPoolLogger())
	if err != nil {
		return err
	}
	res, err := client.Purge(cmd.Context(), key, p.name, p.paths)
	if err != nil {
		pf := publishFlags{originURL: p.originURL}
		return pf.originErr(err)
	}
	what := "every path"
	if len(p.paths) > 0 {
		what = strings.Join(p.paths, " ")
	}
	fmt.Fprintf(cmd.OutOrStdout(), "purged %s (%s): change %d\n", p.name, what, res.ID)
	return nil
}

// key is the key that signs the purge: --key FILE, else NAME's key in the
// keystore.
func (p *purgeFlags) key() (*identity.Key, error) {
	if p.keyFile != "" {
		return identity.Load(p.keyFile)
	}
	ks, err := openKeystore(p.keystore)
	if err != nil {
		return nil, err
	}
	return ks.existingSite(p.name)
}
