// Package waitstatus decodes the wait status the kernel reports for an
// exited task (the proc connector's exit_code, taskstats' ac_exitcode, the
// status of wait4): the one decoder of the project.
package waitstatus

// Decode splits a wait status: a normal exit gives (code 0..255, 0); a
// death by signal gives (-1, signal), and core says the signal dumped core.
func Decode(status uint32) (code, signal int, core bool) {
	if sig := int(status & 0x7f); sig != 0 {
		return -1, sig, status&0x80 != 0
	}
	return int(status>>8) & 0xff, 0, false
}
