package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

func newStorageStatusCmd() *cobra.Command {
	var originURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--origin URL]",
		Short: "Show storage peers, their shards and audits, and segments at risk",
		Long: `status asks an origin (GET /api/v1/storage/status) for its storage peers
(health, space, shards placed, audit results, times caught misbehaving),
the segments whose healthy shards are below the repair threshold or that
hold shards proven bad, and the publishes still waiting to be striped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := httpkit.Get(cmd.Context(), &http.Client{Timeout: 30 * time.Second},
				strings.TrimSuffix(originURL, "/")+"/api/v1/storage/status", 64<<20)
			if err != nil {
				return fmt.Errorf("ask origin: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				_, err := out.Write(body)
				return err
			}
			var st originapi.StorageStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("origin status: %w", err)
			}
			return printStatus(out, &st)
		},
	}
	cmd.Flags().StringVar(&originURL, "origin", envOr("TOPCDN_ORIGIN", "http://127.0.0.1:8081"), "origin URL ($TOPCDN_ORIGIN)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the origin's JSON answer")
	return cmd
}

func printStatus(w io.Writer, st *originapi.StorageStatus) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tHEALTHY\tADDRESS\tFREE\tSHARDS\tAUDITS OK/FAILED\tFLAGS\tREGION")
	for _, p := range st.Peers {
		region := "-"
		if p.Location != nil && p.Location.Region != "" {
			region = p.Location.Region
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s / %s\t%d\t%d/%d\t%d\t%s\n", p.ID, p.Healthy, p.Addr,
			humanize.IBytes(uint64(p.Free)), humanize.IBytes(uint64(p.Capacity)), p.Placed,
			p.AuditsOK, p.AuditsFailed, p.Flags, region)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d segments, %d at risk, %d publishes waiting to be striped\n", st.Segments, len(st.AtRisk), st.PendingJobs)
	for _, h := range st.AtRisk {
		fmt.Fprintf(w, "  segment %d: %d of %d shards healthy (repair below %d), %d proven bad\n", h.Segment, h.Healthy, h.Shards, h.Needed, h.Bad)
	}
	return nil
}
