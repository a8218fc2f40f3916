// Command burner is a test app for outrider's process metrics: it holds a
// known amount of touched memory, opens a known number of files and burns
// CPU on request, and listens on a TCP port so that it can be found as the
// owner of a listening socket.
//
//	burner -listen 127.0.0.1:0 -mem 64 -open 5 [-pidfile F] [-tag T]
//
// It never accepts a connection, so that its descriptors change only when
// asked. Requests come as signals, and every change is reported on stdout:
//
//	SIGUSR1  open -open more files (reports "opened N", N the running total)
//	SIGUSR2  start or stop burning CPU (reports "burning" or "idle")
//	SIGTERM  exit
//
// Once its memory is touched and its port bound it prints
// "ready pid=P addr=A", after writing its pid to -pidfile when set.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

// ballast is the memory the process holds; a package variable keeps it
// reachable, so the collector never gives it back.
var ballast []byte

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	mem := flag.Int("mem", 0, "MiB of memory to allocate and touch")
	open := flag.Int("open", 1, "files to open on each SIGUSR1")
	pidFile := flag.String("pidfile", "", "file to write the pid to once ready")
	_ = flag.String("tag", "", "ignored; lets a test find this process by its command line")
	flag.Parse()

	ballast = make([]byte, *mem<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "burner:", err)
		os.Exit(1)
	}
	defer ln.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)

	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "burner:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("ready pid=%d addr=%s\n", os.Getpid(), ln.Addr())

	var (
		files   []*os.File
		burning bool
		stop    = make(chan struct{})
	)
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR1:
			for range *open {
				f, err := os.Open(os.DevNull)
				if err != nil {
					fmt.Fprintln(os.Stderr, "burner:", err)
					os.Exit(1)
				}
				files = append(files, f)
			}
			fmt.Printf("opened %d\n", len(files))
		case syscall.SIGUSR2:
			if burning {
				stop <- struct{}{}
				burning = false
				fmt.Println("idle")
				continue
			}
			burning = true
			go burn(stop)
			fmt.Println("burning")
		default:
			runtime.KeepAlive(ballast)
			return
		}
	}
}

// burn spins until told to stop.
func burn(stop <-chan struct{}) {
	x := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		for i := range 100000 {
			x += i * i
		}
		runtime.KeepAlive(x)
	}
}
