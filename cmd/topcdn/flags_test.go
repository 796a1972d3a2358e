package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/topcdn/topcdn/internal/buildinfo"
)

func TestSizeFlag(t *testing.T) {
	tests := []struct {
		arg     string
		want    int64
		shows   string
		wantErr bool
	}{
		{arg: "10GiB", want: 10 << 30, shows: "10GiB"},
		{arg: "64 MiB", want: 64 << 20, shows: "64MiB"},
		{arg: "1GB", want: 1e9, shows: "1000000000"},
		{arg: "1536", want: 1536, shows: "1536"},
		{arg: "0", want: 0, shows: "0"},
		{arg: "-1", want: -1, shows: "-1"},
		{arg: "-1GiB", want: -1 << 30, shows: "-1GiB"},
		{arg: "lots", wantErr: true},
		{arg: "16EiB", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.arg, func(t *testing.T) {
			var n int64
			f := pflag.NewFlagSet("test", pflag.ContinueOnError)
			sizeVar(f, &n, "size", 7, "")
			err := f.Parse([]string{"--size", tc.arg})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got := f.Lookup("size").Value.String(); n != tc.want || got != tc.shows {
				t.Fatalf("got %d shown as %q, want %d shown as %q", n, got, tc.want, tc.shows)
			}
		})
	}
}

// TestVersion: `topcdn --version` names the build (version, revision, Go).
func TestVersion(t *testing.T) {
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"--version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	bi := buildinfo.Get()
	if got := out.String(); !strings.HasPrefix(got, "topcdn "+bi.Version) || !strings.Contains(got, bi.GoVersion) {
		t.Fatalf("--version printed %q", got)
	}
}
