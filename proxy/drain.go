package proxy

import (
	"context"
	"fmt"
	"net"
	"time"
)

// DrainReport is what a drain came to.
type DrainReport struct {
	// InFlight is the requests in flight when the drain began.
	InFlight int `json:"in_flight_at_start"`
	// Finished is the requests answered while draining.
	Finished int `json:"finished"`
	// Cut is the requests still in flight at the deadline, whose
	// connections were closed.
	Cut int `json:"cut"`
	// TunnelsCut is the upgraded (WebSocket) tunnels still open at the
	// deadline, closed then.
	TunnelsCut int `json:"tunnels_cut"`
}

// Drain stops accepting connections (once it has taken those queued on
// the listener, whose requests came already), closes idle keep-alive
// connections, answers the requests in flight with "Connection: close",
// sends GOAWAY on HTTP/2 connections, and waits for the requests, the
// HTTP/2 streams and the upgraded tunnels to finish. When ctx ends first
// it closes whatever is left and returns an error naming what it cut.
// Drain runs once: a later or concurrent call waits for the first and
// returns its result.
func (p *Proxy) Drain(ctx context.Context) error {
	// Before draining: an answer that keeps its connection alive after
	// draining is set would have the connection closed under its client.
	p.closeKeepAlive.Store(true)
	if p.draining.Swap(true) {
		select {
		case <-p.drainDone:
			return p.drainErr
		case <-ctx.Done():
			return fmt.Errorf("proxy: drain: %w", ctx.Err())
		}
	}
	rep := DrainReport{InFlight: p.InFlight()}
	before := p.m.answered()
	if h := p.testHookDrainBegun; h != nil {
		h()
	}
	p.closeListener(ctx)
	// The event loops close their idle connections.
	p.evl.Load().wake()

	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		p.h2.shutdown(ctx)
	}()
	err := p.waitDrained(ctx)
	if err == nil {
		select {
		case <-h2done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		// What is left now is cut: count it before closing makes the
		// cut requests count as answered (499 or 502). A deadline that
		// came when nothing was left (a drain timeout of 0, or one that
		// ended with the last request) cut nothing and is no failure.
		rep.Cut, rep.TunnelsCut = p.InFlight(), int(p.tunnels.Load())
		if rep.Cut == 0 && rep.TunnelsCut == 0 {
			err = nil
		} else {
			err = fmt.Errorf("proxy: drain: %d requests still in flight and %d tunnels open: %w", rep.Cut, rep.TunnelsCut, err)
		}
	}
	rep.Finished = int(p.m.answered() - before)
	p.closeAll()
	<-h2done
	p.closeOnce()
	p.drainRep, p.drainErr = rep, err
	close(p.drainDone)
	return err
}

// The drain's last accepts: until none has come for queuedWait, for at
// most queuedMax. A client that connected as the drain began sends its
// request within a millisecond on the networks a sidecar serves.
const (
	queuedWait = time.Millisecond
	queuedMax  = 100 * time.Millisecond
)

// deadliner is a listener whose accepts can be given a deadline, as
// *net.TCPListener's can.
type deadliner interface {
	net.Listener
	SetDeadline(time.Time) error
}

// closeListener closes the listener for good, once it has taken the
// connections queued on it, and pokes the idle connections so that they
// close.
func (p *Proxy) closeListener(ctx context.Context) {
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	// Serve's accept, if it waits, returns now: it holds acceptMu. A
	// listener without deadlines is closed at once instead.
	dl, ok := ln.(deadliner)
	switch {
	case ok:
		_ = dl.SetDeadline(time.Now())
	case ln != nil:
		_ = ln.Close()
	}
	p.acceptMu.Lock()
	defer p.acceptMu.Unlock()
	if ok {
		p.takeQueued(ctx, dl)
		// Closed without mu held: Close waits for an event loop that is
		// accepting from the listener, and the loop takes mu to admit
		// what it accepted.
		_ = dl.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lnClosed = true
	for c := range p.conns {
		c.pokeIfIdle()
	}
}

// takeQueued accepts the connections queued on ln, which closing it would
// reset. The listener hands a connection over once its request has come
// (see Listen), so each of them carries a request sent before the drain
// closed the door; they are served like the others, with "Connection:
// close".
func (p *Proxy) takeQueued(ctx context.Context, ln deadliner) {
	end := time.Now().Add(queuedMax)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d
	}
	for {
		next := time.Now().Add(queuedWait)
		if next.After(end) {
			next = end
		}
		if !time.Now().Before(next) || ln.SetDeadline(next) != nil {
			return
		}
		nc, err := ln.Accept()
		if err != nil {
			// Nothing came for queuedWait, or the listener is closed.
			return
		}
		if c := p.newConn(nc); c != nil {
			p.workers.serve(c)
		}
	}
}

// Answered returns the number of requests answered so far.
func (p *Proxy) Answered() uint64 { return p.m.answered() }

// DrainReport returns what the drain came to; the zero report until the
// first Drain returns.
func (p *Proxy) DrainReport() DrainReport {
	select {
	case <-p.drainDone:
		return p.drainRep
	default:
		return DrainReport{}
	}
}

// waitDrained waits until no plain connection and no tunnel is left, or
// ctx ends.
func (p *Proxy) waitDrained(ctx context.Context) error {
	for p.active.Load() > 0 || p.tunnels.Load() > 0 {
		select {
		case <-p.drained:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// closeAll closes every client connection left; none is admitted after.
func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lnClosed = true
	for c := range p.conns {
		c.cutOff()
	}
	p.evl.Load().wake()
	p.h2.close()
}

// leaveActive notes that a connection stopped being a plain one.
func (p *Proxy) leaveActive() {
	if p.active.Add(-1) == 0 && p.draining.Load() {
		p.signalDrained()
	}
}

// leaveTunnel notes that a tunnel closed.
func (p *Proxy) leaveTunnel() {
	if p.tunnels.Add(-1) == 0 && p.draining.Load() {
		p.signalDrained()
	}
}

func (p *Proxy) signalDrained() {
	select {
	case p.drained <- struct{}{}:
	default:
	}
}
