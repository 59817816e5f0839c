#!/bin/sh
# The root is not a block device named by root=: atomix-initrd assembles it from
# atomix.root=PARTUUID=... Tell dracut the root is taken care of.
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
if getarg atomix.root= >/dev/null; then
    root="atomix"
    rootok=1
fi
