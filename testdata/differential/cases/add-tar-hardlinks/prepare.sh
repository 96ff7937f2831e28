mkdir -p t/d && echo data > t/d/a && ln t/d/a t/d/b && ln t/d/a t/c
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C t -cf hl.tar c d
rm -rf t
