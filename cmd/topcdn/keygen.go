package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/identity"
)

func newKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create an ed25519 identity key and print its peer ID",
		Long: `keygen writes a new ed25519 private key in the libp2p key format (as kubo's
keystore holds them) to FILE with permissions 0600, and prints the key's peer
ID. It never overwrites an existing file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
	cmd.Flags().StringVar(&out, "out", "", "file to write the key to (required)")
	cmd.MarkFlagRequired("out")
	return cmd
}
