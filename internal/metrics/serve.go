package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Handler serves /metrics from m's registry and /healthz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             2 * scrapeTimeout,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := m.Healthy(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "unhealthy:", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve runs loop, and while it runs serves m's Handler on addr when addr
// is set. It listens before loop starts, so an address in use fails at
// once; it returns when loop returns, or when the server fails.
func Serve(ctx context.Context, addr string, m *Metrics, log zerolog.Logger, loop func(context.Context) error) error {
	if addr == "" {
		return loop(ctx)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w: give --metrics-addr a host:port free on this machine", addr, err)
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 3 * scrapeTimeout}
	log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics and /healthz")
	g, gctx := errgroup.WithContext(ctx)
	loopCtx, stopLoop := context.WithCancel(gctx)
	defer stopLoop()
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			stopLoop()
			return fmt.Errorf("serve metrics on %s: %w", addr, err)
		}
		return nil
	})
	g.Go(func() error {
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		return loop(loopCtx)
	})
	return g.Wait()
}
