package main

import (
	"bytes"
	"os"
	"testing"
)

// TestGeoTestFileIsCurrent checks that the committed test database is what
// this generator writes; after changing places, run
// go run ./dnsroute/internal/mkgeo from the repository root.
func TestGeoTestFileIsCurrent(t *testing.T) {
	want, err := build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../testdata/geo-test.mmdb")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("dnsroute/testdata/geo-test.mmdb is out of date: go run ./dnsroute/internal/mkgeo")
	}
}
