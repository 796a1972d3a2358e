package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// serve runs handler on ln until ctx ends, with background work (may be
// nil) running alongside, then shuts down within 10 s, calling onShutdown
// as it starts to (to end long-polls, which would hold it up). When it is
// serving it prints "listening on http://ADDR" on the command's standard
// output, for scripts and tests to wait on.
func serve(ctx context.Context, cmd *cobra.Command, name string, ln net.Listener, handler http.Handler,
	background func(context.Context), log *zap.Logger, onShutdown ...func()) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	for _, f := range onShutdown {
		srv.RegisterOnShutdown(f)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if background != nil {
		bg, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			background(bg)
		}()
		defer func() {
			stop()
			<-done
		}()
	}
	fmt.Fprintf(cmd.OutOrStdout(), "listening on http://%s\n", ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	log.Info(name + " shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	return nil
}
