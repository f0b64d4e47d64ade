"""Which Debian (bookworm) packages the corpus is built from, and what each gives.

The catalog list was measured: of ~380 candidates (GNOME, Xfce, KDE, GNU, base system, games, multimedia),
these give at least 60 sentence-like pairs over de+fr+ro. Game data packages of 100+ MB were left out.
"""


def _names(s: str) -> list[str]:
    return s.split()


# gettext catalogs (and MediaWiki's i18n JSON, WordPress' *-de_DE.mo); English man pages inside them are used too
CATALOGS = _names("""
    a2ps adduser aisleriot alsa-utils apt apt-listchanges aptitude-common aspell at-spi2-common audacious
    audacity-data baobab bash bijiben bison blender-data blueman brasero-common catfish cheese-common
    claws-mail-i18n coreutils cpio cryptsetup-bin darktable debconf-i18n deluge-common diffutils
    digikam-data dolphin dpkg enscript entangle eog evince-common evolution-common
    evolution-data-server-common fcitx5-data file-roller filezilla-common findutils flex freeciv-data
    galculator gawk gcc-12-locales gcr gdm3 geany-common geary gedit-common gettext gimp-data
    gimp-plugin-registry git gitg gnome-bluetooth-3-common gnome-builder gnome-calculator gnome-calendar
    gnome-chess gnome-clocks gnome-contacts gnome-control-center-data gnome-dictionary gnome-disk-utility
    gnome-keyring gnome-logs gnome-maps gnome-mines gnome-music gnome-photos gnome-screenshot
    gnome-session-common gnome-settings-daemon-common gnome-shell-common gnome-software-common gnome-sudoku
    gnome-system-monitor gnome-terminal-data gnome-text-editor gnome-tweaks gnucash-common gnumeric-common
    gnupg-l10n gramps grep grilo-plugins-0.3 grub-common gstreamer1.0-plugins-bad gstreamer1.0-plugins-good
    gthumb-data gvfs-common gwenview handbrake hexchat-common hugin-data inkscape iso-codes kbd kdeconnect
    kdenlive-data kio-extras-data konsole ktorrent-data libc-l10n libfm-data libgdata-common
    libgdk-pixbuf2.0-common libglib2.0-data libgnomekbd-common libgphoto2-l10n libgrilo-0.3-0
    libgsf-1-common libgstreamer1.0-0 libgtk-3-common libgtk-4-common libgtk2.0-common
    libgtksourceview-3.0-common libgtksourceview-4-common libgtksourceview-5-common libgweather-4-common
    libhandy-1-0 libjson-glib-1.0-common libkf5textwidgets-data libkf5xmlgui-data libreoffice-l10n-de
    libreoffice-l10n-fr libreoffice-l10n-ro libsane-common libsoup-3.0-common libsoup2.4-common
    libwnck-3-common libxfce4ui-common login lollypop lxpanel-data lxsession-data lynx-common make man-db
    marble-data mc-data mediawiki meld mkvtoolnix mousepad mutt mutter-common nano nautilus-data neomutt
    net-tools network-manager network-manager-gnome okular openbox packagekit parole pcmanfm pidgin-data
    pitivi poedit-common polari procps psmisc pulseaudio quadrapassel recode rhythmbox-data ristretto
    seahorse sed shotwell-common simple-scan sudo sylpheed-i18n synaptic system-config-printer-common
    systemd tar texinfo thunar-data tint2 totem-common tracker tumbler-common udisks2 util-linux-locales
    vim-runtime vlc-l10n weechat-core wget wordpress-l10n xarchiver xfburn xfce4-panel
    xfce4-power-manager-data xfce4-session xfce4-settings xfce4-terminal xfdesktop4-data xfsprogs xfwm4
    xsane-common yelp
""")

# help pages: the English side is its own package, paired with the target-language packages
LO_HELP = {"en": "libreoffice-help-en-us", "de": "libreoffice-help-de", "fr": "libreoffice-help-fr"}
GIMP_HELP = {"en": "gimp-help-en", "de": "gimp-help-de", "fr": "gimp-help-fr", "ro": "gimp-help-ro"}

# monolingual only: man pages, Debian Reference, fortunes, Mozilla language packs (Romanian is thin)
MONO = _names("""
    manpages manpages-dev manpages-de manpages-fr manpages-ro debian-reference-en debian-reference-de
    debian-reference-fr fortunes fortunes-de firefox-esr-l10n-ro thunderbird-l10n-ro
""")
FORTUNE_LANG = {"fortunes": "en", "fortunes-de": "de"}  # fortune files carry no language in their path

# --lean skips these (200 MB of downloads, mostly screenshots; ~18k help pairs)
BIG = set(GIMP_HELP.values())


def all_packages(lean: bool = False) -> list[str]:
    pkgs = sorted(set(CATALOGS) | set(LO_HELP.values()) | set(GIMP_HELP.values()) | set(MONO))
    return [p for p in pkgs if not (lean and p in BIG)]
