from alpine
run echo a
