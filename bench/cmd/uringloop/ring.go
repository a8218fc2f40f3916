package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The io_uring ABI (linux/io_uring.h), as far as uringloop uses it.
const (
	sysIOURingSetup = 425
	sysIOURingEnter = 426

	setupSubmitAll    = 1 << 7
	setupCQSize       = 1 << 3
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	offSQRing = 0
	offSQEs   = 0x10000000

	opAccept = 13
	opSend   = 26
	opRecv   = 27

	sqeIOLink = 1 << 2

	acceptMultishot = 1 << 0
	cqeFMore        = 1 << 1

	msgWaitAll  = 0x100
	msgNoSignal = 0x4000
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is a submission queue entry (struct io_uring_sqe), 64 bytes.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

// cqe is a completion queue entry (struct io_uring_cqe), 16 bytes.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is one io_uring instance, set up for one issuing thread whose
// completions run only when it asks for them (DEFER_TASKRUN).
type ring struct {
	fd                   int
	mem, sqeMem          []byte
	sqHead, sqTail       *uint32
	sqMask               uint32
	sqes                 []sqe
	cqHead, cqTail       *uint32
	cqMask               uint32
	cqes                 []cqe
	pending              uint32 // SQEs written and not yet submitted
	localTail, localHead uint32
}

func newRing(entries uint32) (*ring, error) {
	p := ringParams{flags: setupSubmitAll | setupCQSize | setupSingleIssuer | setupDeferTaskrun, cqEntries: entries * 4}
	fd, _, e := syscall.Syscall(sysIOURingSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, os.NewSyscallError("io_uring_setup", e)
	}
	r := &ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 {
		r.close()
		return nil, fmt.Errorf("io_uring: this kernel lacks IORING_FEAT_SINGLE_MMAP")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	mem, err := syscall.Mmap(r.fd, offSQRing, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, os.NewSyscallError("mmap", err)
	}
	r.mem = mem
	sqeMem, err := syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, os.NewSyscallError("mmap", err)
	}
	r.sqeMem = sqeMem
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail = u32(p.sqOff.head), u32(p.sqOff.tail)
	r.sqMask = *u32(p.sqOff.ringMask)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sqeMem[0])), p.sqEntries)
	// The index array maps each slot to itself once: an SQE is written
	// at the slot its tail names.
	array := unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.cqHead, r.cqTail = u32(p.cqOff.head), u32(p.cqOff.tail)
	r.cqMask = *u32(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&mem[p.cqOff.cqes])), p.cqEntries)
	r.localTail = atomic.LoadUint32(r.sqTail)
	r.localHead = atomic.LoadUint32(r.cqHead)
	return r, nil
}

func (r *ring) close() {
	if r.sqeMem != nil {
		_ = syscall.Munmap(r.sqeMem)
	}
	if r.mem != nil {
		_ = syscall.Munmap(r.mem)
	}
	_ = syscall.Close(r.fd)
}

// next returns a zeroed SQE to fill in, submitting what is queued first
// when the queue is full.
func (r *ring) next() *sqe {
	for r.localTail-atomic.LoadUint32(r.sqHead) >= uint32(len(r.sqes)) {
		r.enter(0, false)
	}
	s := &r.sqes[r.localTail&r.sqMask]
	*s = sqe{}
	r.localTail++
	r.pending++
	return s
}

// room makes sure n SQEs can be queued without a submission between
// them, as a link must be.
func (r *ring) room(n uint32) {
	for uint32(len(r.sqes))-(r.localTail-atomic.LoadUint32(r.sqHead)) < n {
		r.enter(0, false)
	}
}

// enter submits what is queued and runs the completions that are due;
// with wait it blocks, through the scheduler's bookkeeping, until at
// least wantCQE completions are there.
func (r *ring) enter(wantCQE uint32, wait bool) {
	atomic.StoreUint32(r.sqTail, r.localTail)
	n := r.pending
	r.pending = 0
	if wait {
		_, _, _ = syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), uintptr(n), uintptr(wantCQE), enterGetEvents, 0, 0)
		return
	}
	_, _, _ = syscall.RawSyscall6(sysIOURingEnter, uintptr(r.fd), uintptr(n), 0, enterGetEvents, 0, 0)
}

// pop returns the next completion, if one is there, and frees its slot.
func (r *ring) pop() (cqe, bool) {
	if r.localHead == atomic.LoadUint32(r.cqTail) {
		return cqe{}, false
	}
	c := r.cqes[r.localHead&r.cqMask]
	r.localHead++
	atomic.StoreUint32(r.cqHead, r.localHead)
	return c, true
}
