package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

func billingURLFlag(cmd *cobra.Command, u *string) {
	cmd.Flags().StringVar(u, "billing", envOr("TOPCDN_BILLING", "http://127.0.0.1:8090"), "billing service URL ($TOPCDN_BILLING)")
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newBillingDepositCmd() *cobra.Command {
	var (
		url, keyFile, account, nonce string
		amount                       int64
	)
	cmd := &cobra.Command{
		Use:   "deposit --billing URL --key FILE --account PEER_ID --amount N [--nonce S]",
		Short: "Credit a publisher's account (signed with the billing operator's key)",
		Long: `deposit signs a deposit with the billing operator's key (the --key the
service runs with) and sends it. The service applies only deposits signed
with its own key, and each nonce once: resending a deposit with the same
--nonce does not pay twice. Without --nonce a random one is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := identity.Load(keyFile)
			if err != nil {
				return err
			}
			a, err := billingapi.NewClient(url, nil).Deposit(cmd.Context(), key, account, amount, nonce)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s balance %d\n", a.ID, a.Balance)
			return nil
		},
	}
	billingURLFlag(cmd, &url)
	cmd.Flags().StringVar(&keyFile, "key", "", "billing operator key file (required)")
	cmd.Flags().StringVar(&account, "account", "", "publisher peer ID to credit (required)")
	cmd.Flags().Int64Var(&amount, "amount", 0, "tokens in the smallest unit (required)")
	cmd.Flags().StringVar(&nonce, "nonce", "", "makes the deposit idempotent (default: random)")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("account")
	cmd.MarkFlagRequired("amount")
	return cmd
}

func newBillingAdmitCmd() *cobra.Command {
	var (
		url, keyFile, edge, nonce string
		revoke                    bool
	)
	cmd := &cobra.Command{
		Use:   "admit --billing URL --key FILE --edge PEER_ID [--revoke] [--nonce S]",
		Short: "Admit an edge to be paid, or revoke it (signed with the billing operator's key)",
		Long: `admit signs an admission of an edge with the billing operator's key and
sends it. Billing pays only admitted edges, for the epochs they were
admitted in, and storage peers only for read orders admitted edges (or
the origin) signed; the DNS router hands out only admitted edges when it
runs with --billing. --revoke ends an admission: epochs after it are not
paid. Each nonce is applied once (default: random).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := identity.Load(keyFile)
			if err != nil {
				return err
			}
			a, err := billingapi.NewClient(url, nil).Admit(cmd.Context(), key, edge, revoke, nonce)
			if err != nil {
				return err
			}
			if a.Revoked != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s revoked at %s\n", a.Edge, a.Revoked.Format(time.RFC3339))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s admitted since %s\n", a.Edge, a.Since.Format(time.RFC3339))
			return nil
		},
	}
	billingURLFlag(cmd, &url)
	cmd.Flags().StringVar(&keyFile, "key", "", "billing operator key file (required)")
	cmd.Flags().StringVar(&edge, "edge", "", "the edge's peer ID (required)")
	cmd.Flags().BoolVar(&revoke, "revoke", false, "revoke the edge's admission instead")
	cmd.Flags().StringVar(&nonce, "nonce", "", "makes the admission idempotent (default: random)")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("edge")
	return cmd
}

func newBillingBalanceCmd() *cobra.Command {
	var (
		url, account string
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "balance --billing URL [--account PEER_ID] [--json]",
		Short: "Show one account's balance, or every account's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := billingapi.NewClient(url, nil)
			var accounts []billingapi.Account
			if account != "" {
				a, err := c.Account(cmd.Context(), account)
				if err != nil {
					return err
				}
				accounts = []billingapi.Account{*a}
			} else {
				var err error
				if accounts, err = c.Accounts(cmd.Context()); err != nil {
					return err
				}
			}
			if asJSON {
				if account != "" {
					return printJSON(cmd, accounts[0])
				}
				return printJSON(cmd, accounts)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tKIND\tBALANCE\tOUT OF FUNDS SINCE")
			for _, a := range accounts {
				since := ""
				if a.OutOfFundsSince != nil {
					since = a.OutOfFundsSince.Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", a.ID, a.Kind, a.Balance, since)
			}
			return tw.Flush()
		},
	}
	billingURLFlag(cmd, &url)
	cmd.Flags().StringVar(&account, "account", "", "peer ID (default: every account)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBillingStatementCmd() *cobra.Command {
	var (
		url, account string
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "statement --billing URL --account PEER_ID [--json]",
		Short: "Show an account's entries and the claims billing refused",
		Long: `statement shows an account's balance, every ledger entry that made it
(exactly what settlement paid or charged), and every batch, record, read
order or epoch of the account that billing refused, with its reason.
--json prints {"account":…,"balance":…,"entries":[…],"rejected":[…],"deferred":[…]}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := billingapi.NewClient(url, nil).Statement(cmd.Context(), account)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "account %s (%s): balance %d\n", st.Account, st.Kind, st.Balance)
			if st.OutOfFundsSince != nil {
				fmt.Fprintf(out, "out of funds since %s\n", st.OutOfFundsSince.Format("2006-01-02 15:04:05"))
			}
			fmt.Fprintf(out, "DNS cross-check: %s\n\n", st.DNSCheck)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TX\tEPOCH\tKIND\tBYTES\tAMOUNT\tMEMO")
			for _, e := range st.Entries {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\n", e.Tx, e.Epoch, e.Kind, e.Bytes, e.Amount, e.Memo)
			}
			tw.Flush()
			if len(st.Rejected) > 0 {
				fmt.Fprintln(out, "\nrejected:")
				tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EPOCH\tKIND\tREF\tREASON\tBYTES\tDETAIL")
				for _, r := range st.Rejected {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", r.Epoch, r.Kind, r.Ref, r.Reason, r.Bytes, r.Detail)
				}
				tw.Flush()
			}
			if len(st.Deferred) > 0 {
				fmt.Fprintln(out, "\ndeferred (held until read orders of the edge back them):")
				tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EPOCH\tPUBLISHER\tROOT\tRECORDS\tBYTES\tSINCE")
				for _, d := range st.Deferred {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\n", d.Epoch, d.Publisher, d.Root, d.Records, d.Bytes, d.Since.Format(time.RFC3339))
				}
				tw.Flush()
			}
			return nil
		},
	}
	billingURLFlag(cmd, &url)
	cmd.Flags().StringVar(&account, "account", "", "peer ID (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("account")
	return cmd
}

func newBillingSettleCmd() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "settle --billing URL",
		Short: "Settle every closed epoch (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := billingapi.NewClient(url, nil).Settle(cmd.Context())
			if err != nil {
				return fmt.Errorf("settle: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "settled %d epochs, paid %d\n", len(res.Epochs), res.Paid)
			return nil
		},
	}
	billingURLFlag(cmd, &url)
	return cmd
}
