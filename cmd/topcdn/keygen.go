package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/identity"
)

func newKeygenCmd() *cobra.Command {
	var out, name, keystoreDir string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE | --name NAME [--keystore DIR]",
		Short: "Create an ed25519 identity key and print its peer ID",
		Long: `keygen writes a new ed25519 private key in the libp2p key format (as kubo's
keystore holds them) with permissions 0600, and prints the key's peer ID.
It never overwrites an existing file.

--out FILE writes it to FILE. --name NAME creates the key of the site NAME
in the publisher keystore (DIR/sites/NAME.key, as 'ipfs key gen NAME'
does), ahead of 'topcdn publish --name NAME', which would otherwise create
it; the keystore's account key (DIR/account.key, the account that pays for
every site) is created too if missing, and its peer ID printed on standard
error: deposit to it. --keystore DIR defaults to $TOPCDN_KEYSTORE, else
$XDG_CONFIG_HOME/topcdn/keys, else ~/.config/topcdn/keys.`,
		Example: `  topcdn keygen --out publisher.key
  topcdn keygen --name docs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (out == "") == (name == "") {
				return errors.New("give --out FILE or --name NAME")
			}
			if name != "" {
				return keygenSite(cmd, keystoreDir, name)
			}
			k, err := identity.Generate(nil)
			if err != nil {
				return err
			}
			if err := k.Save(out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the key to")
	cmd.Flags().StringVar(&name, "name", "", "create the key of site NAME in the keystore")
	cmd.Flags().StringVar(&keystoreDir, "keystore", "", keystoreHelp)
	cmd.MarkFlagsMutuallyExclusive("out", "name")
	return cmd
}

// keygenSite creates the key of the site name in the keystore at dir (and
// its account key if missing) and prints the site key's peer ID. A site
// that has a key already keeps it: that is an error, as for --out.
func keygenSite(cmd *cobra.Command, dir, name string) error {
	ks, err := openKeystore(dir)
	if err != nil {
		return err
	}
	account, created, err := ks.account()
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "created account key: %s (%s); deposit to it at billing\n", account.ID, ks.accountPath())
	}
	k, created, err := ks.site(name)
	switch {
	case err != nil:
		return err
	case !created:
		return fmt.Errorf("keygen: %s has a key already (%s, %s): %w", name, k.ID, ks.sitePath(name), fs.ErrExist)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "created key for %s: %s (%s)\n", name, k.ID, ks.sitePath(name))
	fmt.Fprintln(cmd.OutOrStdout(), k.ID)
	return nil
}
