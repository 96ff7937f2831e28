chmod 4755 s
chmod 0600 p
chmod 0711 x
chmod 0700 d
chmod 2775 d
