// hello prints a greeting, built with the go1.24 that Bramble bootstrapped from Debian's go1.19.
package main

import (
	"fmt"
	"runtime"
)

func main() {
	fmt.Printf("Hello from Go %s, bootstrapped from pinned binaries\n", runtime.Version())
}
