package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// P11 is the part of PKCS#11 that vaultkeys uses. *pkcs11.Ctx implements it;
// a test can stand in for a failure it cannot cause on a real token.
type P11 interface {
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	CloseAllSessions(slotID uint) error
	GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error)
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, temp []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Encrypt(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
}

var _ P11 = (*pkcs11.Ctx)(nil)

// PINSource yields the HSM user PIN. Secrets.PIN reads it from Vault.
type PINSource interface {
	PIN(ctx context.Context) (string, error)
}

// HSMConfig configures the PKCS#11 connection.
type HSMConfig struct {
	// Module is the path of the PKCS#11 library. Required.
	Module string
	// TokenLabel names the token to use. Required.
	TokenLabel string
	// PIN supplies the user PIN; it is asked again on every re-login. Required.
	PIN PINSource
	// PoolSize bounds the sessions open at once. Defaults to 2 × GOMAXPROCS.
	PoolSize int
}

// HSMStats are cumulative counters for metrics.
type HSMStats struct {
	Waits        uint64        // acquisitions that found the pool full and waited
	WaitTime     time.Duration // total time spent waiting
	Errors       uint64        // operations that returned an error
	Discarded    uint64        // broken sessions closed and replaced
	Logins       uint64        // logins performed (first and re-logins)
	Ops          uint64        // operations that succeeded
	Copies       uint64        // working copies of keys made (see workingKey)
	InUse, Idle  int           // sessions now
	PoolCapacity int
}

// HSM is a pool of logged-in sessions on one token. See the package doc for
// its concurrency rules.
type HSM struct {
	p      P11
	owned  *pkcs11.Ctx // finalized on Close; nil when P11 was supplied
	slot   uint
	pinSrc PINSource

	sem chan struct{} // one token per session in use

	mu      sync.Mutex
	idle    []pkcs11.SessionHandle
	handles map[handleKey]pkcs11.ObjectHandle // token objects
	working map[handleKey]pkcs11.ObjectHandle // their working copies (see workingKey)
	loginMu sync.Mutex                        // serializes logins

	keeperMu sync.Mutex           // serializes use of keeper, and finds with copies (object)
	keeper   pkcs11.SessionHandle // owns the working copies; 0 when none is open

	genMu sync.Mutex // serializes key generation

	waits, waitNanos, errs, discarded, logins, ops, copies atomic.Uint64
	closed                                                 atomic.Bool
}

type handleKey struct {
	label string
	class uint
}

// OpenHSM loads cfg.Module, finds the token labelled cfg.TokenLabel and logs
// in with the PIN from cfg.PIN.
func OpenHSM(ctx context.Context, cfg HSMConfig) (*HSM, error) {
	if cfg.Module == "" || cfg.TokenLabel == "" || cfg.PIN == nil {
		return nil, errors.New("hsm config needs Module, TokenLabel and PIN")
	}
	p := pkcs11.New(cfg.Module)
	if p == nil {
		return nil, fmt.Errorf("cannot load PKCS#11 module %s (is softhsm2 installed? `make run` installs it)", cfg.Module)
	}
	// The module's state is process-wide. If someone else in this process
	// initialized it, they finalize it too.
	initialized := true
	if err := p.Initialize(); isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		initialized = false
	} else if err != nil {
		p.Destroy()
		return nil, fmt.Errorf("initialize PKCS#11 module %s: %w", cfg.Module, err)
	}
	h, err := NewHSM(ctx, p, cfg)
	if err != nil {
		if initialized {
			_ = p.Finalize()
		}
		p.Destroy()
		return nil, err
	}
	if initialized {
		h.owned = p
	}
	return h, nil
}

// NewHSM is OpenHSM over an already initialized P11; cfg.Module is ignored.
func NewHSM(ctx context.Context, p P11, cfg HSMConfig) (*HSM, error) {
	slot, err := FindSlot(p, cfg.TokenLabel)
	if err != nil {
		return nil, err
	}
	size := cfg.PoolSize
	if size <= 0 {
		size = 2 * runtime.GOMAXPROCS(0)
	}
	h := &HSM{
		p:       p,
		slot:    slot,
		pinSrc:  cfg.PIN,
		sem:     make(chan struct{}, size),
		handles: make(map[handleKey]pkcs11.ObjectHandle),
		working: make(map[handleKey]pkcs11.ObjectHandle),
	}
	// Open one session now so a wrong PIN or missing token fails at start.
	if err := h.Do(ctx, func(pkcs11.SessionHandle) error { return nil }); err != nil {
		return nil, err
	}
	return h, nil
}

// FindSlot returns the slot holding the initialized token labelled label.
func FindSlot(p P11, label string) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", err)
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Label == label && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			return s, nil
		}
	}
	return 0, fmt.Errorf("no HSM token labelled %q (provision it with `quickpay dev` or softhsm2-util)", label)
}

// Close closes every idle session and, if OpenHSM loaded the module,
// finalizes it. Operations still running finish first only if the caller
// waits for them; Close does not.
func (h *HSM) Close() error {
	if !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	h.mu.Lock()
	for _, s := range h.idle {
		_ = h.p.CloseSession(s)
	}
	h.idle = nil
	h.mu.Unlock()
	h.keeperMu.Lock()
	h.dropKeeper()
	h.keeperMu.Unlock()
	if h.owned != nil {
		_ = h.owned.Finalize()
		h.owned.Destroy()
	}
	return nil
}

// Ping proves the pool can reach the token: it asks a logged-in session for
// its state, so a broken session is replaced (and the PIN asked again)
// rather than reported healthy.
func (h *HSM) Ping(ctx context.Context) error {
	return h.Do(ctx, func(s pkcs11.SessionHandle) error {
		info, err := h.p.GetSessionInfo(s)
		if err != nil {
			return err
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
		}
		return nil
	})
}

// Slot is the slot id of the token, for tools and tests.
func (h *HSM) Slot() uint { return h.slot }

// P11 returns the underlying PKCS#11 interface, for tools and tests that
// read attributes back.
func (h *HSM) P11() P11 { return h.p }

// Stats returns cumulative pool counters.
func (h *HSM) Stats() HSMStats {
	h.mu.Lock()
	idle := len(h.idle)
	h.mu.Unlock()
	return HSMStats{
		Waits:        h.waits.Load(),
		WaitTime:     time.Duration(h.waitNanos.Load()),
		Errors:       h.errs.Load(),
		Discarded:    h.discarded.Load(),
		Logins:       h.logins.Load(),
		Ops:          h.ops.Load(),
		Copies:       h.copies.Load(),
		InUse:        len(h.sem),
		Idle:         idle,
		PoolCapacity: cap(h.sem),
	}
}

// maxAttempts bounds how often Do replaces a broken session or re-finds a
// stale handle before giving up.
const maxAttempts = 4

// Do runs fn on a pooled, logged-in session. Every operation vaultkeys runs
// is a pure function of its inputs, so when fn fails because the session
// broke, the login was lost, or a cached object handle went stale, Do fixes
// that and runs fn again on a fresh session, up to maxAttempts times.
//
// Do waits for a free session until ctx is done and then returns ctx.Err().
func (h *HSM) Do(ctx context.Context, fn func(s pkcs11.SessionHandle) error) error {
	var err error
	// relogin: the token said the login is lost. checkLogin: a handle went
	// stale, which a lost login also causes (C_Logout drops the private
	// objects' handles while the sessions stay open), so the login is
	// checked on the next session and made again if it is gone.
	relogin, checkLogin := false, false
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var s pkcs11.SessionHandle
		s, err = h.acquire(ctx)
		if err == nil && (relogin || checkLogin) {
			force := relogin
			relogin, checkLogin = false, false
			if err = h.login(ctx, s, force); err != nil {
				h.release(s, err)
			}
		}
		if err == nil {
			err = fn(s)
			h.release(s, err)
		}
		if err == nil {
			h.ops.Add(1)
			return nil
		}
		h.errs.Add(1)
		switch {
		case ctx.Err() != nil:
			return err
		case isBrokenSession(err):
			h.flushIdle() // they are likely broken too (e.g. C_CloseAllSessions)
		case isCode(err, pkcs11.CKR_USER_NOT_LOGGED_IN):
			relogin = true
		case isCode(err, pkcs11.CKR_OBJECT_HANDLE_INVALID), isCode(err, pkcs11.CKR_KEY_HANDLE_INVALID):
			h.forgetHandles()
			checkLogin = true
		default:
			return err
		}
	}
	return fmt.Errorf("hsm: gave up after %d attempts: %w", maxAttempts, err)
}

func (h *HSM) acquire(ctx context.Context) (pkcs11.SessionHandle, error) {
	if h.closed.Load() {
		return 0, errors.New("hsm: closed")
	}
	select {
	case h.sem <- struct{}{}:
	default:
		h.waits.Add(1)
		start := time.Now()
		select {
		case h.sem <- struct{}{}:
			h.waitNanos.Add(uint64(time.Since(start)))
		case <-ctx.Done():
			h.waitNanos.Add(uint64(time.Since(start)))
			return 0, fmt.Errorf("hsm: waiting for a session: %w", ctx.Err())
		}
	}
	h.mu.Lock()
	if n := len(h.idle); n > 0 {
		s := h.idle[n-1]
		h.idle = h.idle[:n-1]
		h.mu.Unlock()
		return s, nil
	}
	h.mu.Unlock()

	s, err := h.p.OpenSession(h.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		<-h.sem
		return 0, fmt.Errorf("hsm: open session: %w", err)
	}
	if err := h.login(ctx, s, false); err != nil {
		_ = h.p.CloseSession(s)
		<-h.sem
		return 0, err
	}
	return s, nil
}

// release returns s to the pool, or closes it when opErr says it is broken.
func (h *HSM) release(s pkcs11.SessionHandle, opErr error) {
	defer func() { <-h.sem }()
	if isBrokenSession(opErr) || h.closed.Load() {
		_ = h.p.CloseSession(s)
		h.discarded.Add(1)
		return
	}
	h.mu.Lock()
	h.idle = append(h.idle, s)
	h.mu.Unlock()
}

func (h *HSM) flushIdle() {
	h.mu.Lock()
	idle := h.idle
	h.idle = nil
	h.mu.Unlock()
	for _, s := range idle {
		_ = h.p.CloseSession(s)
		h.discarded.Add(1)
	}
}

// login logs the application in through s unless it already is. PKCS#11
// login state is per application and token, not per session: it is lost only
// when every session closes. After a real (re-)login, cached object handles
// are dropped and found again.
func (h *HSM) login(ctx context.Context, s pkcs11.SessionHandle, force bool) error {
	h.loginMu.Lock()
	defer h.loginMu.Unlock()
	if !force {
		info, err := h.p.GetSessionInfo(s)
		if err != nil {
			return fmt.Errorf("hsm: session info: %w", err)
		}
		if info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS {
			return nil
		}
	}
	pin, err := h.pinSrc.PIN(ctx)
	if err != nil {
		return fmt.Errorf("hsm: user PIN: %w", err)
	}
	err = h.p.Login(s, pkcs11.CKU_USER, pin)
	if err != nil && !isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		if isCode(err, pkcs11.CKR_PIN_INCORRECT) || isCode(err, pkcs11.CKR_PIN_LOCKED) {
			return fmt.Errorf("hsm: login refused: the PIN from the PIN source is wrong for this token or locked: %w", err)
		}
		return fmt.Errorf("hsm: login: %w", err)
	}
	h.logins.Add(1)
	h.forgetHandles()
	return nil
}

// forgetHandles drops the cached token-object handles, and the working
// copies with their keeper session if that has gone (C_CloseAllSessions) or
// its copies have (C_Logout destroys private session objects and leaves the
// session open; the copies of private keys are private). While the keeper
// and its copies live, they are kept: closing the keeper would pull keys
// from under operations running on them, and dropping them would only make
// new copies beside them.
func (h *HSM) forgetHandles() {
	h.mu.Lock()
	clear(h.handles)
	var copyOf pkcs11.ObjectHandle
	for _, o := range h.working {
		copyOf = o
		break
	}
	h.mu.Unlock()
	h.keeperMu.Lock()
	defer h.keeperMu.Unlock()
	if h.keeper == 0 {
		return
	}
	if _, err := h.p.GetSessionInfo(h.keeper); err != nil {
		h.dropKeeper()
		return
	}
	if copyOf != 0 {
		_, err := h.p.GetAttributeValue(h.keeper, copyOf, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)})
		if isCode(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
			h.dropKeeper()
		}
	}
}

// dropKeeper closes the keeper session, which destroys the working copies,
// and forgets them. The caller holds keeperMu.
func (h *HSM) dropKeeper() {
	if h.keeper != 0 {
		_ = h.p.CloseSession(h.keeper)
		h.keeper = 0
	}
	h.mu.Lock()
	clear(h.working)
	h.mu.Unlock()
}

// ErrKeyNotFound means no object with the label exists on the token.
var ErrKeyNotFound = errors.New("key not found in HSM")

// object returns the handle of the object labelled label of the given class,
// from the cache when it can.
func (h *HSM) object(s pkcs11.SessionHandle, label string, class uint) (pkcs11.ObjectHandle, error) {
	k := handleKey{label, class}
	if o, ok := h.cached(h.handles, k); ok {
		return o, nil
	}
	// Private objects are hidden from a session that is not logged in:
	// after a lost login (C_Logout) a key is there, unseen. The state is
	// read before the find, since another goroutine may log in meanwhile;
	// nothing logs the process out while this one holds a session.
	info, err := h.p.GetSessionInfo(s)
	if err != nil {
		return 0, fmt.Errorf("hsm: session info: %w", err)
	}
	loggedIn := info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS
	// Not while a working copy is made: SoftHSM2 builds a copy attribute by
	// attribute, and a find in between sees it with the original's label
	// and CKA_TOKEN, as a second key of that label.
	h.keeperMu.Lock()
	objs, err := h.find(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}, 2)
	h.keeperMu.Unlock()
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		if !loggedIn {
			return 0, fmt.Errorf("hsm: find %s: %w", label, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN))
		}
		return 0, fmt.Errorf("%w: %s", ErrKeyNotFound, label)
	case 1:
	default:
		return 0, fmt.Errorf("hsm: more than one object labelled %s", label)
	}
	h.remember(h.handles, k, objs[0])
	return objs[0], nil
}

// cached looks k up in m (handles or working).
func (h *HSM) cached(m map[handleKey]pkcs11.ObjectHandle, k handleKey) (pkcs11.ObjectHandle, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o, ok := m[k]
	return o, ok
}

// remember records o under k in m (handles or working).
func (h *HSM) remember(m map[handleKey]pkcs11.ObjectHandle, k handleKey, o pkcs11.ObjectHandle) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m[k] = o
}

// workingKey returns the handle to compute with for the secret or private
// key labelled label: a session-object copy of the token key, made inside
// the HSM by C_CopyObject and owned by the keeper session, an extra session
// outside the pool that stays open. The copy inherits CKA_SENSITIVE and
// CKA_EXTRACTABLE (checked here), so its value can no more leave the HSM
// than the original's; it only spares every operation SoftHSM2's check of
// the token object's file (open, lock, read, close each time), which made
// an AES-GCM encryption 2-3 times slower and serialized concurrent ones.
//
// A token that refuses copies (CKA_COPYABLE false) is used directly. A
// key deleted from the token stays usable through its copy until the keeper
// closes (Close, a restart): versions are retired by key policy
// (min_decryption_version), which Vault checks before any HSM call, not by
// deleting keys.
func (h *HSM) workingKey(s pkcs11.SessionHandle, label string, class uint) (pkcs11.ObjectHandle, error) {
	k := handleKey{label, class}
	if o, ok := h.cached(h.working, k); ok {
		return o, nil
	}
	tok, err := h.object(s, label, class)
	if err != nil {
		return 0, err
	}
	h.keeperMu.Lock()
	defer h.keeperMu.Unlock()
	if o, ok := h.cached(h.working, k); ok { // another goroutine copied it meanwhile
		return o, nil
	}
	o, err := h.copyToKeeper(tok, label)
	// A key created with CKA_MODIFIABLE false (createKey, since issue 18)
	// cannot be copied into a session object: SoftHSM2 refuses even a copy
	// that changes only CKA_TOKEN (CKR_ATTRIBUTE_READ_ONLY). Such a key is
	// used in place, on the token (docs/decisions.md: the cost).
	if isCode(err, pkcs11.CKR_ACTION_PROHIBITED) || isCode(err, pkcs11.CKR_FUNCTION_NOT_SUPPORTED) ||
		isCode(err, pkcs11.CKR_ATTRIBUTE_READ_ONLY) {
		o, err = tok, nil
	}
	if err != nil {
		return 0, err
	}
	h.remember(h.working, k, o)
	return o, nil
}

// workingLabelSuffix keeps working copies out of lookups by label.
const workingLabelSuffix = " (working copy)"

// copyToKeeper copies the token key tok into the keeper session, opening
// it (again) when needed. The caller holds keeperMu and has a logged-in
// session, so the application is logged in and the keeper is too.
func (h *HSM) copyToKeeper(tok pkcs11.ObjectHandle, label string) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label+workingLabelSuffix),
	}
	var o pkcs11.ObjectHandle
	var err error
	for range 2 {
		if h.keeper == 0 {
			if h.closed.Load() {
				return 0, errors.New("hsm: closed")
			}
			if h.keeper, err = h.p.OpenSession(h.slot, pkcs11.CKF_SERIAL_SESSION); err != nil {
				h.keeper = 0
				return 0, fmt.Errorf("hsm: open keeper session: %w", err)
			}
		}
		if o, err = h.p.CopyObject(h.keeper, tok, tmpl); !isBrokenSession(err) {
			break
		}
		h.dropKeeper() // its copies went with it
	}
	if err != nil {
		return 0, err
	}
	attrs, err := h.p.GetAttributeValue(h.keeper, o, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
	})
	if isBrokenSession(err) {
		h.dropKeeper()
		return 0, err
	}
	if err != nil || !attrTrue(attrs[0]) || attrTrue(attrs[1]) {
		_ = h.p.DestroyObject(h.keeper, o)
		if err == nil {
			err = fmt.Errorf("hsm: the copy of %s is not sensitive and non-extractable", label)
		}
		return 0, err
	}
	h.copies.Add(1)
	return o, nil
}

// attrTrue reads a CK_BBOOL attribute.
func attrTrue(a *pkcs11.Attribute) bool { return len(a.Value) == 1 && a.Value[0] != 0 }

func (h *HSM) find(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := h.p.FindObjectsInit(s, tmpl); err != nil {
		return nil, fmt.Errorf("hsm: find objects: %w", err)
	}
	objs, _, err := h.p.FindObjects(s, max)
	ferr := h.p.FindObjectsFinal(s)
	if err != nil {
		return nil, fmt.Errorf("hsm: find objects: %w", err)
	}
	if ferr != nil {
		return nil, fmt.Errorf("hsm: find objects: %w", ferr)
	}
	return objs, nil
}

func isCode(err error, code uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == code
}

// isBrokenSession reports errors after which a session must not be reused.
func isBrokenSession(err error) bool {
	if err == nil {
		return false
	}
	for _, c := range []uint{
		pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_OPERATION_ACTIVE, // an operation was left half-done on it
	} {
		if isCode(err, c) {
			return true
		}
	}
	return false
}
