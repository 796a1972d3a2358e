package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// newLogger logs to stderr at level: console lines on a terminal, JSON
// otherwise, as Caddy does.
func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil
	if term.IsTerminal(int(os.Stderr.Fd())) {
		cfg.Encoding = "console"
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	return cfg.Build()
}

// withLogger makes a command's RunE that runs run with a logger at *level,
// synced when the command returns.
func withLogger(level *string, run func(cmd *cobra.Command, log *zap.Logger) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		log, err := newLogger(*level)
		if err != nil {
			return err
		}
		defer log.Sync()
		return run(cmd, log)
	}
}

// originPoolLogger is the logger CLI clients of the origins give their
// pool: failovers between origins are told on standard error, as warnings.
func originPoolLogger() originapi.PoolOption {
	log, err := newLogger("warn")
	if err != nil {
		return originapi.WithPoolLogger(nil)
	}
	return originapi.WithPoolLogger(log)
}
